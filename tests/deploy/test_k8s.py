"""The Kubernetes manifests of deploy/k8s and deploy/prometheus-adapter, rendered and checked.

Every kustomization is rendered (tests/deploy/kustomize.py: kustomize's output for what these
use) and every document is validated against the Kubernetes OpenAPI schemas that
``kubernetes-validate`` bundles, strict (an unknown field fails), for the oldest and the newest
Kubernetes the manifests claim. Then what the schemas cannot know: the probes ask paths the
processes serve, the HPA scales on a metric Celeris exports under that name (through the
prometheus-adapter rule), the settings in the ConfigMap are settings ``celeris serve`` has, and
the tokens come from a Secret.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from celeris.serving.config import ServeSettings, load_serve_settings
from tests.deploy.celeris_args import check_celeris_args
from tests.deploy.kustomize import KustomizeError, apply_operation, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ADAPTER = ROOT / "deploy" / "prometheus-adapter" / "rules.yaml"
KUSTOMIZATIONS = ("base", "live", "overlays/production", "overlays/gpu")
#: The Kubernetes versions the manifests are validated against: the oldest still common in
#: managed clusters and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version() + ".0")
SERVE_PREFIX = "CELERIS_SERVE_"


@functools.cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / name))


def adapter_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(ADAPTER.read_text()) if d]


def find(docs: Any, kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


# -- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "prometheus-adapter"])
def test_k8s_manifests_each_validate_against_kubernetes_schemas(name):
    docs = adapter_docs() if name == "prometheus-adapter" else rendered(name)
    assert docs
    for doc in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError as exc:  # an unknown kind fails too
                pytest.fail(f"{name}: {exc.message}")
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{name}: {doc['kind']}/{doc['metadata']['name']} {where}: {exc.message}"
                )


def test_k8s_validation_with_unknown_field_fails():
    # The check above can fail: strict validation refuses a misspelt field.
    deployment = dict(find(rendered("base"), "Deployment", "celeris-serve"))
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_k8s_every_yaml_file_is_rendered_by_a_kustomization():
    # A manifest no kustomization lists would escape the schema check (and `kubectl apply -k`).
    listed: set[Path] = set()
    for name in KUSTOMIZATIONS:
        directory = K8S / name
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed.update((directory / r).resolve() for r in spec.get("resources", []))
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files and files <= listed, sorted(str(p) for p in files - listed)


# -- what the processes serve -------------------------------------------------------------------


@functools.cache
def serve_routes() -> dict[str, int]:
    """GET status of each probe path on the real ``celeris serve`` application (no models)."""
    import tempfile

    from starlette.testclient import TestClient

    from celeris.serving.http import create_app
    from celeris.serving.manager import ModelManager
    from celeris.serving.metrics import PrometheusMetrics
    from celeris.serving.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        settings = ServeSettings(registry=Path(tmp))
        metrics = PrometheusMetrics(system=False, gpu=False)
        manager = ModelManager(None, ModelRegistry(Path(tmp)), settings, metrics=metrics)
        with TestClient(create_app(manager)) as client:
            return {p: client.get(p).status_code for p in ("/healthz", "/readyz", "/metrics")}


def live_routes() -> set[str]:
    from celeris.live.metrics import LiveMetrics, admin_app

    app = admin_app(LiveMetrics(["BTC/USDT"], timeframe_ns=60 * 10**9), print, print)
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET"}


def test_k8s_serve_probes_ask_paths_celeris_serve_answers():
    deployment = find(rendered("base"), "Deployment", "celeris-serve")
    (container,) = pod_spec(deployment)["containers"]
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    status = serve_routes()
    # 200 while the process runs; /readyz answers 503 (not 404) until the models are warm.
    assert status[liveness["httpGet"]["path"]] == 200
    assert status[readiness["httpGet"]["path"]] == 503
    # The probes' named port is the container port the server listens on.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = find(rendered("base"), "ConfigMap", "celeris-config")["data"]
    for probe in (readiness, liveness):
        assert ports[probe["httpGet"]["port"]] == int(config["CELERIS_SERVE_PORT"])
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert status[scrape["prometheus.io/path"]] == 200
    assert int(scrape["prometheus.io/port"]) == int(config["CELERIS_SERVE_PORT"])


def test_k8s_live_probes_ask_paths_of_the_live_metrics_port():
    deployment = find(rendered("live"), "Deployment", "celeris-live")
    (container,) = pod_spec(deployment)["containers"]
    served = live_routes()
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--"))
    # Probes come from the kubelet to the pod's address: loopback only would fail them all.
    assert args["--metrics-host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        check = container[probe]["httpGet"]
        assert check["path"] == path and path in served
        assert ports[check["port"]] == int(args["--metrics-port"])
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/path"] in served
    assert scrape["prometheus.io/port"] == args["--metrics-port"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one writer of the journal
    state = args["--state"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    claim = volumes[mounts[state]]["persistentVolumeClaim"]["claimName"]
    find(rendered("live"), "PersistentVolumeClaim", claim)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_k8s_celeris_command_lines_parse_with_the_cli(name):
    # An option renamed in the CLI would otherwise show only when a pod starts and exits 2.
    containers = [
        c for d in rendered(name) if d["kind"] == "Deployment" for c in pod_spec(d)["containers"]
    ]
    assert containers
    for container in containers:
        assert "command" not in container  # the image's entrypoint is `celeris`
        check_celeris_args(container["args"])


def test_k8s_command_line_check_refuses_unknown_option_or_value():
    with pytest.raises(Exception, match="No such option: --metrics-prot"):
        check_celeris_args(["live", "--metrics-prot=9108"])
    with pytest.raises(Exception, match="valid integer"):
        check_celeris_args(["live", "--metrics-port=http"])
    with pytest.raises(AssertionError, match="no command 'serv'"):
        check_celeris_args(["serv"])


def test_k8s_hpa_scales_on_the_queue_gauge_celeris_exports():
    from celeris.serving.metrics import PrometheusMetrics

    hpa = find(rendered("base"), "HorizontalPodAutoscaler", "celeris-serve")
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    hpa_metric = by_type["Pods"]["pods"]["metric"]["name"]
    # The adapter turns a Prometheus series into the custom metric the HPA asks for.
    (config,) = adapter_docs()
    (rule,) = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == hpa_metric
    series = rule["seriesQuery"].split("{", 1)[0].strip("'\"")
    assert rule["name"]["matches"] == f"^{series}$"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # ... and that series is the batcher's queue gauge under the name /metrics gives it.
    metrics = PrometheusMetrics(system=False, gpu=False)
    metrics.set_queue("btc", "1", 5)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert series in families, sorted(families)
    assert families[series].type == "gauge"
    assert [s.value for s in families[series].samples] == [5.0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "celeris-serve"
    find(rendered("base"), "Deployment", hpa["spec"]["scaleTargetRef"]["name"])


def test_k8s_configmap_holds_only_settings_celeris_serve_has(monkeypatch):
    config = find(rendered("base"), "ConfigMap", "celeris-config")["data"]
    for key in config:
        assert key.startswith(SERVE_PREFIX), key
        assert key[len(SERVE_PREFIX) :].lower() in ServeSettings.model_fields, key
    # ... and the values load: the server would start with them.
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CELERIS_ADMIN_TOKEN", "x" * 32)
    settings = load_serve_settings()
    assert settings.port == int(config["CELERIS_SERVE_PORT"]) and settings.models


def test_k8s_tokens_come_from_a_secret_never_a_literal():
    for name in KUSTOMIZATIONS:
        for doc in rendered(name):
            if doc["kind"] != "Deployment":
                continue
            for container in pod_spec(doc)["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                for variable in ("CELERIS_ADMIN_TOKEN", "CELERIS_PUBLISH_TOKEN",
                                 "CELERIS_SERVE_REGISTRY_URL"):  # fmt: skip
                    if variable in env:
                        assert "value" not in env[variable], (name, variable)
                        assert (
                            env[variable]["valueFrom"]["secretKeyRef"]["name"] == "celeris-tokens"
                        )
    serve = pod_spec(find(rendered("base"), "Deployment", "celeris-serve"))["containers"][0]
    assert "CELERIS_ADMIN_TOKEN" in {e["name"] for e in serve["env"]}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_k8s_selectors_match_their_pods(name):
    docs = rendered(name)
    templates = [
        d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"
    ]
    for doc in docs:
        selector = {
            "Deployment": lambda d: d["spec"]["selector"]["matchLabels"],
            "PodDisruptionBudget": lambda d: d["spec"]["selector"]["matchLabels"],
            "Service": lambda d: d["spec"]["selector"],
        }.get(doc["kind"])
        if selector is not None:
            wanted = selector(doc).items()
            assert any(wanted <= labels.items() for labels in templates), doc["metadata"]["name"]


def test_k8s_serve_runs_unprivileged_and_has_resources():
    for name in KUSTOMIZATIONS:
        for doc in rendered(name):
            if doc["kind"] != "Deployment":
                continue
            pod = pod_spec(doc)
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 10001  # the images' user
            for container in [*pod["containers"], *pod.get("initContainers", [])]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert container["resources"]["requests"]["memory"]
                assert container["resources"]["limits"]["memory"]


def test_k8s_gpu_overlay_asks_a_gpu_on_gpu_nodes():
    gpu = find(rendered("overlays/gpu"), "Deployment", "celeris-serve")
    pod = pod_spec(gpu)
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert all(c["image"].endswith("-cuda") for c in [*pod["containers"], *pod["initContainers"]])
    hpa = find(rendered("overlays/gpu"), "HorizontalPodAutoscaler", "celeris-serve")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]
    cpu = pod_spec(find(rendered("base"), "Deployment", "celeris-serve"))["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


# -- the renderer itself ------------------------------------------------------------------------


def test_kustomize_patch_of_missing_member_raises():
    doc = {"spec": {"replicas": 1}}
    apply_operation(doc, {"op": "replace", "path": "/spec/replicas", "value": 3})
    apply_operation(doc, {"op": "add", "path": "/spec/a~1b", "value": [1]})
    apply_operation(doc, {"op": "add", "path": "/spec/a~1b/-", "value": 2})
    apply_operation(doc, {"op": "remove", "path": "/spec/a~1b/0"})
    assert doc == {"spec": {"replicas": 3, "a/b": [2]}}
    with pytest.raises(KustomizeError, match="no such member"):
        apply_operation(doc, {"op": "replace", "path": "/spec/replica", "value": 3})
    with pytest.raises(KustomizeError, match="does not exist"):
        apply_operation(doc, {"op": "add", "path": "/spec/template/spec", "value": {}})
    with pytest.raises(KustomizeError, match="no index"):
        apply_operation(doc, {"op": "remove", "path": "/spec/a~1b/1"})


def test_kustomize_unsupported_field_or_patch_raises(tmp_path):
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\nnamespace: n\npatches:\n"
        "  - target: {kind: ConfigMap, name: a}\n    patch: 'metadata: {labels: {a: b}}'\n"
    )
    with pytest.raises(KustomizeError, match="JSON 6902"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\nnamespace: n\npatches:\n  - target: {kind: ConfigMap, name: b}\n"
        "    patch: '[{op: add, path: /data, value: {}}]'\n"
    )
    with pytest.raises(KustomizeError, match="matches no resource"):
        render(tmp_path)
