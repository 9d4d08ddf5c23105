"""The deployment files name real commands, real ports, real paths and real settings."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from worker.cli import build_parser
from worker.http.app import create_app
from worker.queue.names import DEFAULT_QUEUE
from worker.settings import Settings, describe

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "ops"
DEFAULTS = Settings()
# Variables the files may set beyond our settings: boto3's, Python's, and the image's
# health-check URL.
OTHER_VARIABLES = {"AWS_REGION", "PYTHONUNBUFFERED", "PATH", "QRW_HEALTH_URL"}
KNOWN_VARIABLES = {name for name, _, _ in describe()} | OTHER_VARIABLES


def assert_real_command(argv: list[str]) -> None:
    """`qrw ...` as a file names it must be a command our CLI accepts."""
    assert Path(argv[0]).name == "qrw", argv
    parsed = build_parser().parse_args(argv[1:])
    assert parsed.handler is not None


def http_paths() -> set[str]:
    return {route.path for route in create_app(Settings(backend="none")).routes}


def test_the_procfile_runs_the_worker_and_the_shim() -> None:
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert set(entries) == {"worker", "shim"}
    for command in entries.values():
        assert_real_command(shlex.split(command))
    assert shlex.split(entries["worker"])[1] == "worker"
    assert shlex.split(entries["shim"])[1] == "serve"


@pytest.mark.parametrize("unit", ["qrw-worker.service", "qrw-shim.service"])
def test_systemd_units_parse_and_run_real_commands(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((OPS / "systemd" / unit).read_text())
    service = parser["Service"]
    assert service["User"] != "root"
    assert_real_command(shlex.split(service["ExecStart"]))
    assert service["KillSignal"] == "SIGTERM"
    if unit == "qrw-worker.service":
        # A warm stop waits for the longest job.
        assert int(service["TimeoutStopSec"]) > DEFAULTS.job_timeout


def test_the_systemd_environment_example_sets_only_real_variables() -> None:
    lines = (OPS / "systemd" / "env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert names <= KNOWN_VARIABLES


def test_the_container_image_is_slim_non_root_ships_models_and_checks_health() -> None:
    text = (OPS / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "COPY models ./models" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert exposed == {DEFAULTS.http_port, DEFAULTS.metrics_port}
    assert "HEALTHCHECK" in text
    command = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
    assert_real_command(command)
    health = re.search(r"^ENV QRW_HEALTH_URL=http://127\.0\.0\.1:(\d+)(/\S+)", text, re.M)
    assert health and int(health.group(1)) == DEFAULTS.metrics_port


def manifests() -> list[dict]:
    found = []
    for path in sorted((OPS / "k8s").glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def containers(kind: str = "Deployment") -> dict[str, dict]:
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]
        for doc in manifests()
        if doc["kind"] == kind
    }


def test_kubernetes_deployments_run_real_commands_on_real_ports() -> None:
    deployed = containers()
    assert set(deployed) == {"qrw-worker", "qrw-shim"}
    for container in deployed.values():
        assert_real_command(container["command"])
        for variable in container.get("env", []):
            assert variable["name"] in KNOWN_VARIABLES
    worker, shim = deployed["qrw-worker"], deployed["qrw-shim"]
    assert worker["ports"][0]["containerPort"] == DEFAULTS.metrics_port
    assert shim["ports"][0]["containerPort"] == DEFAULTS.http_port
    assert shim["readinessProbe"]["httpGet"]["path"] == "/readyz"
    paths = http_paths()
    for probe in ("readinessProbe", "livenessProbe"):
        assert shim[probe]["httpGet"]["path"] in paths
        assert shim[probe]["httpGet"]["port"] == DEFAULTS.http_port
    assert worker["livenessProbe"]["httpGet"]["port"] == DEFAULTS.metrics_port


def test_the_configmap_sets_only_real_variables() -> None:
    (configmap,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    assert set(configmap["data"]) <= KNOWN_VARIABLES


def test_keda_scales_the_workers_on_the_queue_the_workers_read() -> None:
    (scaled,) = [doc for doc in manifests() if doc["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "qrw-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"rq:queue:{DEFAULT_QUEUE}"
    assert DEFAULT_QUEUE in DEFAULTS.queues


# The share of one Redis core a fleet may take at full scale (docs/operations.md, *How far
# one Redis goes*): the rest is for bursts, maintenance passes and idle workers.
REDIS_SHARE = 0.7


def photo_jobs_per_s_per_pod() -> float:
    """One worker pod's single-image jobs a second on photos, from the README's headline
    (the ONNX cascade's median ms per image over the benchmark corpus)."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"^\| \*\*qr-worker cascade \(ONNX detector\)\*\* \|.*\| ([\d.]+) / ", readme, re.M
    )
    assert match, "README's headline table lost the cascade's median ms per image"
    return 1000.0 / float(match.group(1))


def redis_cpu_us_per_job() -> float:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    match = re.search(r"Headline: ([\d,]+) us of Redis CPU per single-image job", text)
    assert match, "docs/benchmarks.md lost the Redis capacity headline"
    return float(match.group(1).replace(",", ""))


def test_keda_holds_seconds_of_a_pods_work_and_never_outgrows_one_redis() -> None:
    (scaled,) = [doc for doc in manifests() if doc["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    per_pod = photo_jobs_per_s_per_pod()
    # The backlog one pod may hold before KEDA adds another: a few seconds of photo work,
    # not a backlog the pod drains in a second, nor one that waits half a minute.
    assert 2.0 <= int(trigger["metadata"]["listLength"]) / per_pod <= 10.0
    # Every pod KEDA may start must be one Redis can feed: at photo speed (the slowest mix,
    # so the most pods), the whole fleet within REDIS_SHARE of Redis's one core.
    redis_share = scaled["spec"]["maxReplicaCount"] * per_pod * redis_cpu_us_per_job() / 1e6
    assert redis_share <= REDIS_SHARE


def test_the_workers_serve_backfill_jobs_after_live_ones() -> None:
    from worker.backfill import Options

    (configmap,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    queues = Settings.from_env({"QRW_QUEUES": configmap["data"]["QRW_QUEUES"]}).queues
    assert queues[0] == DEFAULT_QUEUE
    assert Options().queue in queues[1:]


def test_the_backfill_job_resumes_its_run_or_starts_it_and_restarts_on_failure() -> None:
    (job,) = [doc for doc in manifests() if doc["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == containers()["qrw-worker"]["image"]
    assert container["envFrom"] == [{"configMapRef": {"name": "qr-worker"}}]
    assert container["resources"]["limits"]["memory"] == "1Gi"
    shell, flag, script = container["command"]
    assert (shell, flag) == ("sh", "-c")
    name, *rest = container["args"]

    def as_run(command: str) -> list[str]:
        """The argv sh runs for one command of the script, given the Job's args."""
        argv: list[str] = []
        for word in shlex.split(command.strip().removeprefix("exec ")):
            argv += [name] if word == "$0" else rest if word == "$@" else [word]
        return argv

    resume, start = (as_run(command) for command in script.split("||"))
    # Resume first: a restarted pod continues its run; start only when Redis has none.
    assert resume == ["qrw", "backfill", "resume", name]
    assert start[:4] == ["qrw", "backfill", "start", name]
    for argv in (resume, start):
        assert_real_command(argv)
    assert "--out" in start
    assert "--source" in start or "--manifest" in start
