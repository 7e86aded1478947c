#!/usr/bin/env bash
# One-time setup of embed's home: a DigitalOcean Kubernetes cluster with a GPU node pool (or CPU only), Knative
# Serving with Kourier, cert-manager and Let's Encrypt for https, registry pull access, the raiox-embed Secret and
# the domain. Safe to run again: every step creates what is missing and re-applies the configuration.
# Then roll.sh puts an image on it (the deploy workflow does that on every push to main). docs/deploy.md, step 5.
#
#   CLUSTER=raiox REGION=tor1 REGISTRY=<your registry> EMBED_DOMAIN=embed.example.org ACME_EMAIL=you@example.org \
#   EMBED_ENV_FILE=infra/embed/embed.env infra/embed/install.sh [gpu|cpu]
#
# Needs doctl (signed in), kubectl, curl and sha256sum. Optional: GPU_SIZE (default gpu-4000adax1-20gb, DigitalOcean's
# RTX 4000 Ada), NODE_SIZE (default s-4vcpu-8gb, two nodes for Knative, Kourier and cert-manager), GPU_NODES_MAX
# (default 2: the GPU pool autoscales between 1 and it), DNS_IN_DIGITALOCEAN=1 (EMBED_DOMAIN's parent zone is a
# DigitalOcean domain: the A record is written for you).
set -euo pipefail

VARIANT="${1:-gpu}"
case "$VARIANT" in gpu|cpu) ;; *) echo "usage: $0 [gpu|cpu]" >&2; exit 2 ;; esac
: "${CLUSTER:?set CLUSTER}" "${REGION:?set REGION (e.g. tor1, one with GPU Droplets)}" "${REGISTRY:?set REGISTRY}"
: "${EMBED_DOMAIN:?set EMBED_DOMAIN}" "${ACME_EMAIL:?set ACME_EMAIL}" "${EMBED_ENV_FILE:?set EMBED_ENV_FILE}"
GPU_SIZE="${GPU_SIZE:-gpu-4000adax1-20gb}"
NODE_SIZE="${NODE_SIZE:-s-4vcpu-8gb}"
GPU_NODES_MAX="${GPU_NODES_MAX:-2}"
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/raiox-embed-manifests"
mkdir -p "$CACHE"
test -r "$EMBED_ENV_FILE" || { echo "$EMBED_ENV_FILE not readable (copy infra/embed/embed.env.example)" >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }

# A pinned release manifest, downloaded once and checked against manifests.sha256 when it lists the file (the
# first install prints the sums to add there; commit them so every later install verifies the same bytes).
fetched() {
  local url="$1" file
  file="$CACHE/$(basename "$(dirname "$url")")-$(basename "$url")"
  [ -s "$file" ] || curl --fail --silent --show-error --location --proto '=https' -o "$file" "$url"
  local sum name
  sum="$(sha256sum "$file" | cut -d' ' -f1)"
  name="$(basename "$file")"
  if grep -q " $name\$" "$HERE/manifests.sha256" 2>/dev/null; then
    grep " $name\$" "$HERE/manifests.sha256" | cut -d' ' -f1 | grep -qx "$sum" \
      || { echo "$name: sha256 $sum differs from manifests.sha256" >&2; exit 1; }
  else
    echo "  add to infra/embed/manifests.sha256: $sum $name" >&2
  fi
  echo "$file"
}

# The repository's manifests with this lab's values in place of the placeholders.
rendered() {
  sed -e "s#EMBED_DOMAIN#${EMBED_DOMAIN}#g" -e "s#ACME_EMAIL#${ACME_EMAIL}#g" "$1"
}

step "cluster $CLUSTER in $REGION"
if ! doctl kubernetes cluster get "$CLUSTER" >/dev/null 2>&1; then
  doctl kubernetes cluster create "$CLUSTER" --region "$REGION" --node-pool "name=system;size=${NODE_SIZE};count=2" \
    --wait
fi
doctl kubernetes cluster kubeconfig save "$CLUSTER"

if [ "$VARIANT" = gpu ]; then
  step "GPU node pool ($GPU_SIZE, 1 to $GPU_NODES_MAX nodes, labelled raiox/pool=gpu, tainted nvidia.com/gpu)"
  if ! doctl kubernetes cluster node-pool get "$CLUSTER" gpu >/dev/null 2>&1; then
    doctl kubernetes cluster node-pool create "$CLUSTER" --name gpu --size "$GPU_SIZE" --count 1 \
      --auto-scale --min-nodes 1 --max-nodes "$GPU_NODES_MAX" \
      --label raiox/pool=gpu --taint nvidia.com/gpu=present:NoSchedule
  fi
  kubectl wait --for=condition=Ready node -l raiox/pool=gpu --timeout=20m
  # The GPU must be schedulable (the NVIDIA device plugin advertises it) before a pod asks for one.
  for _ in $(seq 60); do
    [ -n "$(kubectl get nodes -l raiox/pool=gpu -o jsonpath='{.items[*].status.allocatable.nvidia\.com/gpu}')" ] && break
    sleep 10
  done
  [ -n "$(kubectl get nodes -l raiox/pool=gpu -o jsonpath='{.items[*].status.allocatable.nvidia\.com/gpu}')" ] \
    || { echo "no node advertises nvidia.com/gpu: is the NVIDIA device plugin running on the GPU pool?" >&2; exit 1; }
fi

step "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "$(fetched "$CERT_MANAGER_URL")"
kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=10m

step "Knative Serving $KNATIVE_VERSION with Kourier $KOURIER_VERSION"
kubectl apply -f "$(fetched "$SERVING_CRDS_URL")"
kubectl wait --for=condition=Established crd/services.serving.knative.dev --timeout=5m
kubectl apply -f "$(fetched "$SERVING_CORE_URL")"
kubectl apply -f "$(fetched "$KOURIER_URL")"
kubectl -n knative-serving wait --for=condition=Available deployment --all --timeout=10m
kubectl -n kourier-system wait --for=condition=Available deployment --all --timeout=10m

step "Knative configuration: features, Kourier, domain $EMBED_DOMAIN, TLS from Let's Encrypt"
for manifest in namespace config-features config-network config-domain config-certmanager cluster-issuer; do
  rendered "$HERE/cluster/$manifest.yaml" | kubectl apply -f -
done

step "registry $REGISTRY: pull access for the raiox namespace"
doctl kubernetes cluster registry add "$CLUSTER"
doctl registry kubernetes-manifest --namespace raiox --name raiox-registry | kubectl apply -f -

step "the raiox-embed Secret from $EMBED_ENV_FILE (values are not printed)"
kubectl -n raiox create secret generic raiox-embed --from-env-file="$EMBED_ENV_FILE" --dry-run=client -o yaml \
  | kubectl apply -f - >/dev/null

step "DNS: raiox-embed.$EMBED_DOMAIN -> the Kourier load balancer"
address=""
for _ in $(seq 60); do
  address="$(kubectl -n kourier-system get service kourier -o jsonpath='{.status.loadBalancer.ingress[0].ip}')"
  [ -n "$address" ] && break
  sleep 10
done
[ -n "$address" ] || { echo "the Kourier load balancer has no address yet; run this script again" >&2; exit 1; }
if [ "${DNS_IN_DIGITALOCEAN:-0}" = 1 ]; then
  zone="${EMBED_DOMAIN#*.}"
  host="raiox-embed.${EMBED_DOMAIN%."$zone"}"
  doctl compute domain records list "$zone" --format Name,Type --no-header | grep -qx "$host *A" \
    || doctl compute domain records create "$zone" --record-type A --record-name "$host" --record-data "$address" \
         --record-ttl 300
else
  echo "create a DNS A record: raiox-embed.$EMBED_DOMAIN -> $address"
fi

step "done"
echo "next: infra/embed/roll.sh registry.digitalocean.com/$REGISTRY/raiox-embed:<tag> $VARIANT"
echo "then EMBED_URL=https://raiox-embed.$EMBED_DOMAIN"
