"""deploy/k8s: every manifest validates against the Kubernetes schemas (kubernetes-validate, offline,
strict: unknown fields are errors), and agrees with the service's own configuration: ports, probe
paths, image names and tags, environment variable names and values.

KServe's InferenceService is not in the Kubernetes schemas: its predictor container is validated as
a Kubernetes container (inside a Pod) and the KServe fields are checked one by one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes the manifests claim (HPA v2, Indexed Jobs, appProtocol) and the newest known.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
KUBERNETES_VERSION = KUBERNETES_VERSIONS[0]
BUILT_IN_GROUPS = ("v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in manifest_files() for doc in load(path)]


def of_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(path, doc) for path, doc in all_documents() if doc["kind"] == kind]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]
    return doc["spec"]["template"]["spec"]


def serving_containers() -> list[tuple[str, dict]]:
    """(where, container) for every container that runs the serving image."""
    found = []
    for path, doc in of_kind("Deployment") + of_kind("InferenceService"):
        for container in pod_spec(doc)["containers"]:
            found.append((f"{path.relative_to(REPO)}:{doc['metadata']['name']}", container))
    return found


def env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def uses_gpu(container: dict) -> bool:
    return "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})


@pytest.fixture(scope="module")
def project() -> dict:
    """What the manifests must agree with: bentofile.yaml, pyproject.toml and visionzoo.serving.config."""
    from visionzoo.serving import config

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("VISIONZOO_")}
    try:
        config.reload()
        grpc_port = config.server_settings().grpc_port  # the default, without this machine's settings
    finally:
        os.environ.update(saved)
        config.reload()
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return {"config": config, "grpc_port": grpc_port, "name": bentofile["name"], "version": version}


@pytest.fixture
def no_network(monkeypatch):
    """kubernetes-validate must work offline: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("kubernetes-validate tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_there_is_a_manifest_for_every_deliverable():
    kinds = {doc["kind"] for _, doc in all_documents()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService", "Job"} <= kinds
    assert any(uses_gpu(c) for _, c in serving_containers()), "no GPU variant"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_kubernetes_schemas(path, version, no_network):
    for doc in load(path):
        if doc["apiVersion"] in BUILT_IN_GROUPS:
            kubernetes_validate.validate(doc, version, strict=True)
        elif doc["kind"] == "InferenceService":
            check_inference_service(doc, version)
        else:
            pytest.fail(f"{path}: {doc['apiVersion']} {doc['kind']} is neither built in nor checked here")


def test_validation_catches_mistakes(no_network):
    """The strict schemas reject what a typo produces (so a passing test means something)."""
    doc = load(K8S / "deployment.yaml")[0]
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = container["readinessProbe"]["httpGet"].pop("path")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    doc = load(K8S / "service.yaml")[0]
    doc["spec"]["ports"][0]["port"] = "3000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def check_inference_service(doc: dict, version: str) -> None:
    """KServe v1beta1 InferenceService with a custom predictor (its CRD is not in the schemas)."""
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    annotations = doc["metadata"].get("annotations", {})
    assert annotations.get("serving.kserve.io/deploymentMode", "Serverless") in ("RawDeployment", "Serverless", "Standard")
    predictor = doc["spec"]["predictor"]
    known = {"containers", "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "serviceAccountName",
             "nodeSelector", "tolerations", "volumes", "timeout", "containerConcurrency"}
    assert set(predictor) <= known, f"unexpected predictor fields {set(predictor) - known}"
    assert isinstance(predictor["minReplicas"], int) and isinstance(predictor["maxReplicas"], int)
    assert 0 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor.get("scaleMetric", "cpu") in ("cpu", "memory", "concurrency", "rps")
    assert isinstance(predictor.get("scaleTarget", 1), int)
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # KServe's name for the predictor container
    assert env(container)["PROTOCOL"]["value"] == "v2"  # KServe's key for a custom container's protocol
    # The container itself is a Kubernetes container: validate it inside a Pod.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": doc["metadata"]["name"]}, "spec": {"containers": [container]}}
    kubernetes_validate.validate(pod, version, strict=True)


def test_ports_agree_with_the_service(project):
    from bentoml._internal.configuration.containers import BentoMLContainer

    from deploy.containerfile import GRPC_PORT

    http_port = BentoMLContainer.http.port.get()  # the service sets no port of its own
    assert GRPC_PORT == project["grpc_port"], "deploy/containerfile.py EXPOSEs another gRPC port than visionzoo.serving.config"
    for where, container in serving_containers():
        ports = {p["containerPort"] for p in container["ports"]}
        assert ports == {http_port, project["grpc_port"]}, where
        grpc = env(container).get("VISIONZOO_GRPC_PORT")
        assert grpc is not None and int(grpc["value"]) == project["grpc_port"], where


def test_services_route_to_the_deployments(project):
    deployments = {doc["metadata"]["name"]: doc for _, doc in of_kind("Deployment")}
    services = [doc for _, doc in of_kind("Service") if doc["spec"].get("clusterIP") != "None"]
    assert services
    for service in services:
        matching = [d for d in deployments.values()
                    if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} Deployments"
        (container,) = matching[0]["spec"]["template"]["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        targets = {p["name"]: named.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert targets == {"http": 3000, "grpc": project["grpc_port"]}
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == targets
        assert {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}


def test_probes_use_the_services_health_routes():
    from visionzoo.serving.service import VisionZoo

    def paths(routes, prefix=""):
        for route in routes:
            path = prefix + (getattr(route, "path", None) or "")
            yield path
            mounted = getattr(route, "app", None)
            if hasattr(mounted, "routes"):  # /metrics is served by the mounted OIP app (serving/oip/rest.py)
                yield from paths(mounted.routes, path)

    routes = set(paths(VisionZoo.to_asgi().routes))
    assert {"/livez", "/readyz", "/metrics"} <= routes
    for where, container in serving_containers():
        named = {p.get("name"): p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where  # false until models are warm
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez", where
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                port = container[probe]["httpGet"]["port"]
                assert named.get(port, port) == 3000, f"{where}: {probe} is not on the HTTP port"


def test_images_are_the_ones_the_build_makes(project):
    """deploy/build_image.sh tags IMAGE:VERSION (CPU) and IMAGE:VERSION-gpu, IMAGE = bentofile name."""
    for where, container in serving_containers():
        expected = f"{project['name']}:{project['version']}" + ("-gpu" if uses_gpu(container) else "")
        assert container["image"] == expected, where
    for path in K8S.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        for resource in kustomization["resources"]:
            assert (path.parent / resource).is_file(), f"{path}: missing {resource}"
        for image in kustomization.get("images", []):
            assert image["name"] == project["name"]
            assert image["newTag"].startswith(project["version"])


def test_environment_variables_exist_in_the_service_config(project):
    """Every VISIONZOO_* variable a manifest sets is one visionzoo/serving/config.py documents, with a value it accepts."""
    config = project["config"]
    documented = set(re.findall(r"^\| (VISIONZOO_[A-Z_<>]+) \|", config.__doc__, flags=re.MULTILINE))
    assert "VISIONZOO_GRPC_PORT" in documented
    patterns = [re.compile("^" + name.replace("<MODEL>", "(" + "|".join(n.upper() for n in config.served_models()) + ")") + "$")
                for name in documented]
    for where, container in serving_containers():
        for name in env(container):
            if name == "PROTOCOL":  # KServe's, checked with the InferenceService
                continue
            assert any(p.match(name) for p in patterns), f"{where}: {name} is not a setting of visionzoo/serving/config.py"
        values = {name: item["value"] for name, item in env(container).items() if "value" in item}
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("VISIONZOO_")}
        try:
            os.environ.update({k: v for k, v in values.items() if k.startswith("VISIONZOO_")})
            config.reload()
            config.served_models()  # raises ConfigError on a value the service would refuse
        finally:
            for name in values:
                os.environ.pop(name, None)
            os.environ.update(saved)
            config.reload()
        if uses_gpu(container):
            assert values.get("VISIONZOO_DEVICE") == "cuda", f"{where}: a GPU pod should refuse to fall back to CPU"
        secret = env(container).get("VISIONZOO_ADMIN_TOKEN")
        if secret is not None:
            assert "value" not in secret, f"{where}: the admin token belongs in a Secret"


def test_gpu_variant(project):
    gpu = [(where, c) for where, c in serving_containers() if uses_gpu(c)]
    assert gpu
    for where, container in gpu:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, where
    for _, doc in of_kind("Deployment"):
        if uses_gpu(doc["spec"]["template"]["spec"]["containers"][0]):
            tolerations = doc["spec"]["template"]["spec"].get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def test_autoscaler_targets_a_deployment_with_cpu_requests():
    deployments = {doc["metadata"]["name"]: doc for _, doc in of_kind("Deployment")}
    for _, hpa in of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        (container,) = deployments[target["name"]]["spec"]["template"]["spec"]["containers"]
        assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a CPU request"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def multiworker_job() -> tuple[dict, dict]:
    (path,) = list((K8S / "training").glob("*.yaml"))
    docs = load(path)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    return job, service


def test_training_job_gives_every_worker_a_reachable_address(project):
    job, service = multiworker_job()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    (container,) = pod["containers"]
    assert container["image"] == f"{project['name']}-train:{project['version']}"
    port = container["ports"][0]["containerPort"]
    workers = env(container)["WORKERS"]["value"].split(",")
    assert workers == [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}:{port}" for i in range(spec["completions"])]


def test_training_job_hands_tf_config_to_the_training_cli(tmp_path):
    """Run the Job's own shell command with a stand-in `visionzoo`: each index gets a TF_CONFIG that
    visionzoo/training/train.py reads as intended (worker 0 is the chief), and the CLI gets --strategy multiworker."""
    from visionzoo.training.registry import RECIPES
    from visionzoo.training.train import is_chief

    job, _ = multiworker_job()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    fake = bin_dir / "visionzoo"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\nprint(json.dumps({{'argv': sys.argv[1:], 'TF_CONFIG': os.environ['TF_CONFIG']}}))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    workers = env(container)["WORKERS"]["value"]
    for index in range(job["spec"]["completions"]):
        result = subprocess.run(container["command"] + container["args"], capture_output=True, text=True, check=True,
                                env={"PATH": f"{bin_dir}:/usr/bin:/bin", "WORKERS": workers, "JOB_COMPLETION_INDEX": str(index)})
        call = json.loads(result.stdout.strip().splitlines()[-1])
        tf_config = json.loads(call["TF_CONFIG"])
        assert tf_config == {"cluster": {"worker": workers.split(",")}, "task": {"type": "worker", "index": index}}
        argv = call["argv"]
        assert argv[0] == "train" and argv[1] in RECIPES
        assert argv[argv.index("--strategy") + 1] == "multiworker" and "--data-dir" in argv
        os.environ["TF_CONFIG"] = call["TF_CONFIG"]
        try:
            assert is_chief() == (index == 0)
        finally:
            del os.environ["TF_CONFIG"]
