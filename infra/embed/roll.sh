#!/usr/bin/env bash
# Put an embed image on the cluster install.sh set up, and wait until it serves: the GPU service, or with `cpu` the
# CPU variant (IMAGE is then the -cpu image). Prints the service's URL (EMBED_URL). The deploy workflow runs it.
#   infra/embed/roll.sh registry.digitalocean.com/<registry>/raiox-embed:<tag> [gpu|cpu]
set -euo pipefail
IMAGE="${1:?usage: $0 IMAGE [gpu|cpu]}"
VARIANT="${2:-gpu}"
HERE="$(cd "$(dirname "$0")" && pwd)"
case "$VARIANT" in
  gpu) manifest="$HERE/knative-service.yaml"; placeholder='registry.digitalocean.com/REGISTRY/raiox-embed:TAG$' ;;
  cpu) manifest="$HERE/knative-service-cpu.yaml"; placeholder='registry.digitalocean.com/REGISTRY/raiox-embed:TAG-cpu$' ;;
  *) echo "usage: $0 IMAGE [gpu|cpu]" >&2; exit 2 ;;
esac
grep -q "$placeholder" "$manifest"
sed "s#${placeholder}#${IMAGE}#" "$manifest" | kubectl apply -f -
kubectl -n raiox wait --for=condition=Ready ksvc/raiox-embed --timeout=15m
kubectl -n raiox get ksvc raiox-embed -o jsonpath='{.status.url}'
echo
