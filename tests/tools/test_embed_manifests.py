"""embed's home (infra/embed): every manifest, with a lab's values in place of its placeholders, validates offline
against the Kubernetes, Knative Serving and cert-manager schemas (infra/k8s-validate: kubernetes-models and its
Knative and cert-manager packages from the npm registry); every pod-spec field a Knative service uses is one Knative
allows, with its feature flag enabled in cluster/config-features.yaml; the scripts parse; the versions they install
are pinned and match the schemas; the image is built from the lock."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from raiox.tools.deploy.manifest import REPO

EMBED = REPO / "infra" / "embed"
VALIDATE = REPO / "infra" / "k8s-validate"
MANIFESTS = sorted([*EMBED.glob("*.yaml"), *(EMBED / "cluster").glob("*.yaml")])
LAB = {"EMBED_DOMAIN": "embed.lab.example", "ACME_EMAIL": "it@lab.example",
       "registry.digitalocean.com/REGISTRY/raiox-embed:TAG": "registry.digitalocean.com/lab/raiox-embed:0123abc"}
# Knative Serving's PodSpecMask (knative/serving knative-v1.22.1, pkg/apis/serving/fieldmask.go): the pod-spec fields
# always allowed, and those allowed only when their feature flag (config-features) is enabled. RevisionSpec adds its
# own four. Any other field is refused by Knative's webhook whatever the flags.
ALWAYS = {"containers", "volumes", "imagePullSecrets", "serviceAccountName", "enableServiceLinks",
          "automountServiceAccountToken", "containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
          "idleTimeoutSeconds"}
FLAGGED = {"affinity": "kubernetes.podspec-affinity", "nodeSelector": "kubernetes.podspec-nodeselector",
           "tolerations": "kubernetes.podspec-tolerations", "runtimeClassName": "kubernetes.podspec-runtimeclassname",
           "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
           "hostAliases": "kubernetes.podspec-hostaliases",
           "securityContext": "kubernetes.podspec-securitycontext",
           "priorityClassName": "kubernetes.podspec-priorityclassname",
           "schedulerName": "kubernetes.podspec-schedulername",
           "initContainers": "kubernetes.podspec-init-containers", "dnsPolicy": "kubernetes.podspec-dnspolicy",
           "dnsConfig": "kubernetes.podspec-dnsconfig",
           "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace"}


def rendered(path: Path) -> str:
    text = path.read_text()
    for placeholder, value in LAB.items():
        text = text.replace(placeholder, value)
    return text


def validate(paths: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    if shutil.which("node") is None or not (VALIDATE / "node_modules" / "kubernetes-models").is_dir():
        message = "infra/k8s-validate is not installed (npm ci --prefix infra/k8s-validate; make test does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(["node", str(VALIDATE / "validate.mjs"), *map(str, paths)], capture_output=True, text=True,
                          timeout=120, check=False)
    return done.returncode, json.loads(done.stdout or "[]")


def test_every_manifest_validates_against_its_schema(tmp_path: Path) -> None:
    assert len(MANIFESTS) >= 8
    files = []
    for manifest in MANIFESTS:
        text = rendered(manifest)
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"\bREGISTRY\b|EMBED_DOMAIN|ACME_EMAIL|:TAG\b", body), manifest.name  # all filled
        (tmp_path / manifest.name).write_text(text)
        files.append(tmp_path / manifest.name)
    status, results = validate(files)
    assert status == 0 and len(results) == len(files), json.dumps([r for r in results if not r.get("valid")], indent=1)
    kinds = {(r["apiVersion"], r["kind"]) for r in results}
    assert {("serving.knative.dev/v1", "Service"), ("cert-manager.io/v1", "ClusterIssuer"),
            ("v1", "ConfigMap"), ("v1", "Namespace")} <= kinds


def test_the_validator_refuses_a_broken_manifest(tmp_path: Path) -> None:
    service = yaml.safe_load(rendered(EMBED / "knative-service.yaml"))
    service["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    service["spec"]["template"]["spec"]["timeoutSeconds"] = "ten minutes"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(service) + "---\napiVersion: example.org/v1\nkind: Mystery\nmetadata: {name: x}\n")
    status, results = validate([broken])
    assert status == 1
    assert "containerPort must be integer" in results[0]["error"] and "timeoutSeconds" in results[0]["error"]
    assert results[1]["error"].startswith("no schema here")


def _services() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, yaml.safe_load(rendered(path))) for path in EMBED.glob("knative-service*.yaml")]


def test_every_pod_field_is_one_knative_allows_with_its_flag_enabled() -> None:
    features = yaml.safe_load((EMBED / "cluster" / "config-features.yaml").read_text())["data"]
    enabled = {flag for flag, value in features.items() if value == "enabled"}
    for name, service in _services():
        spec = service["spec"]["template"]["spec"]
        unknown = set(spec) - ALWAYS - set(FLAGGED)
        assert not unknown, f"{name}: Knative refuses {unknown}"
        for field in set(spec) & set(FLAGGED):
            assert FLAGGED[field] in enabled, f"{name} uses {field}: enable {FLAGGED[field]} in config-features.yaml"
    assert {"kubernetes.podspec-nodeselector", "kubernetes.podspec-tolerations"} <= enabled


def test_the_gpu_service_lands_on_the_pool_install_sh_creates() -> None:
    services = dict(_services())
    gpu, cpu = services["knative-service.yaml"], services["knative-service-cpu.yaml"]
    install = (EMBED / "install.sh").read_text()
    for name, service in services.items():
        container = service["spec"]["template"]["spec"]["containers"][0]
        assert service["metadata"] == {"name": "raiox-embed", "namespace": "raiox"}, name  # one EMBED_URL either way
        assert service["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "raiox-registry"}], name
        assert container["envFrom"] == [{"secretRef": {"name": "raiox-embed"}}], name
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}, name
        assert container["ports"] == [{"containerPort": 8080}], name
    spec = gpu["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    label = next(iter(spec["nodeSelector"].items()))
    assert f"--label {label[0]}={label[1]}" in install
    assert "--taint nvidia.com/gpu=present:NoSchedule" in install and spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu_spec = cpu["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(cpu_spec) and "nodeSelector" not in cpu_spec
    assert cpu_spec["containers"][0]["image"].endswith("-cpu")
    assert "raiox-registry" in install and "secret generic raiox-embed --from-env-file" in install


def test_the_scripts_parse_and_pin_what_they_install() -> None:
    for script in ("install.sh", "roll.sh"):
        path = EMBED / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["bash", "-n", str(path)], check=True)
    versions = dict(line.split("=", 1) for line in (EMBED / "versions.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert re.fullmatch(r"knative-v1\.22\.\d+", versions["KNATIVE_VERSION"])  # the schemas' line (see versions.env)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions["CERT_MANAGER_VERSION"])
    for key in ("SERVING_CRDS_URL", "SERVING_CORE_URL", "KOURIER_URL", "CERT_MANAGER_URL"):
        assert versions[key].startswith("https://github.com/") and "/releases/download/${" in versions[key], key
    package = json.loads((VALIDATE / "package.json").read_text())
    assert package["dependencies"]["@kubernetes-models/knative"] == "4.0.0"
    install = (EMBED / "install.sh").read_text()
    for key in ("SERVING_CRDS_URL", "SERVING_CORE_URL", "KOURIER_URL", "CERT_MANAGER_URL"):
        assert f'fetched "${key}"' in install, key
    for manifest in ("namespace", "config-features", "config-network", "config-domain", "config-certmanager",
                     "cluster-issuer"):
        assert manifest in install and (EMBED / "cluster" / f"{manifest}.yaml").is_file(), manifest


def test_roll_sh_fills_the_image_of_each_variant(tmp_path: Path) -> None:
    """roll.sh with a stand-in kubectl: the GPU manifest gets the image, the CPU one the -cpu image."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"#!/bin/sh\ncase \"$*\" in *apply*) cat > {tmp_path}/applied.yaml ;;\n"
                       "*' get '*) printf https://raiox-embed.embed.lab.example ;; esac\n")
    kubectl.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for variant, image in (("gpu", "registry.digitalocean.com/lab/raiox-embed:abc"),
                           ("cpu", "registry.digitalocean.com/lab/raiox-embed:abc-cpu")):
        done = subprocess.run([str(EMBED / "roll.sh"), image, variant], env=env, capture_output=True, text=True,
                              check=True)
        applied = yaml.safe_load((tmp_path / "applied.yaml").read_text())
        assert applied["spec"]["template"]["spec"]["containers"][0]["image"] == image, variant
        assert "https://raiox-embed.embed.lab.example" in done.stdout
