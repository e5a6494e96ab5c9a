"""The built image, run as a user runs it: `podman run -p 3000 -p 8001 IMAGE` (docker works too).

`container` (session scope) starts the image once with both ports published on free host ports,
waits for /readyz, measures time-to-ready, copies the models that the image serves out of it (so
the tests compare against the golden files of exactly those models), and always removes the
container at the end, writing its log next to the report when a test failed.

Settings (environment):
  VISIONZOO_IMAGE              image to test          default visionzoo:<pyproject version>
  VISIONZOO_CONTAINER_ENGINE   podman or docker       default podman when installed, else docker
  VISIONZOO_CONTAINER_NAME     container name         default visionzoo-test-<pid>
  VISIONZOO_CONTAINER_REPORT   JSON report path       default build/container-test/report.json
  VISIONZOO_CONTAINER_REQUIRED 1: fail, not skip, when the engine or the image is missing
                               (`make container-test` sets it)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = float(os.environ.get("VISIONZOO_CONTAINER_READY_TIMEOUT", "600"))
BENTO_MODELS = "/home/bentoml/bento/src/exported_models"  # where the Bento puts exported_models/ in the image
REPORTS: list[dict] = []  # for the terminal summary


def engine() -> str:
    return os.environ.get("VISIONZOO_CONTAINER_ENGINE") or ("podman" if shutil.which("podman") else "docker")


def image() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return os.environ.get("VISIONZOO_IMAGE") or f"visionzoo:{version}"


def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([engine(), *args], capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Container:
    """A running container of the image: where to reach it and what it serves."""

    name: str
    image: str
    http_port: int
    grpc_port: int
    admin_token: str
    models_dir: Path  # a copy of the image's exported_models/
    report: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return run("exec", self.name, *command, check=False)

    def logs(self) -> str:
        return _logs(self.name)


def _unavailable(reason: str) -> None:
    if os.environ.get("VISIONZOO_CONTAINER_REQUIRED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _host_port(name: str, port: int) -> int:
    # "127.0.0.1:41234" (podman, docker), possibly one line per address family
    line = run("port", name, f"{port}/tcp").stdout.strip().splitlines()[0]
    return int(line.rsplit(":", 1)[1])


def _logs(name: str) -> str:
    done = run("logs", name, check=False)
    return done.stdout + done.stderr


def _wait_until_ready(url: str, name: str, deadline: float) -> None:
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            state = run("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
            if state in ("exited", "dead", ""):
                raise RuntimeError(f"the container stopped ({state or 'gone'}):\n{_logs(name)[-6000:]}")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    raise TimeoutError(f"not ready after {READY_TIMEOUT_S:.0f}s:\n{_logs(name)[-6000:]}")


@pytest.fixture(scope="session")
def container(request, tmp_path_factory) -> Container:
    if not shutil.which(engine()):
        _unavailable(f"{engine()} is not installed (deploy/install_podman.sh installs podman)")
    if run("image", "inspect", image(), check=False).returncode != 0:
        _unavailable(f"no image {image()}; build it with `make container`")
    name = os.environ.get("VISIONZOO_CONTAINER_NAME") or f"visionzoo-test-{os.getpid()}"
    token = secrets.token_hex(16)
    run("rm", "-f", name, check=False)
    size = int(run("image", "inspect", "--format", "{{.Size}}", image()).stdout.strip())
    report_path = Path(os.environ.get("VISIONZOO_CONTAINER_REPORT") or REPO / "build" / "container-test" / "report.json")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    # `run` is `create` + `start`; timed apart, because creating copies the whole image with the
    # vfs storage driver of sandboxes like CI's, and overlayfs makes that step instant elsewhere.
    created = time.monotonic()
    run("create", "--name", name, "-p", "127.0.0.1::3000", "-p", "127.0.0.1::8001",
        "-e", f"VISIONZOO_ADMIN_TOKEN={token}", image())
    started = time.monotonic()
    try:
        run("start", name)
        http_port, grpc_port = _host_port(name, 3000), _host_port(name, 8001)
        _wait_until_ready(f"http://127.0.0.1:{http_port}", name, started + READY_TIMEOUT_S)
        ready = time.monotonic()
        models_dir = tmp_path_factory.mktemp("image-models")
        run("cp", f"{name}:{BENTO_MODELS}/.", str(models_dir))
        report = {
            "image": image(),
            "image_size_mb": round(size / 1e6),
            "create_s": round(started - created, 1),
            "start_to_ready_s": round(ready - started, 1),  # process start, model loading and warm-up
            "time_to_ready_s": round(ready - created, 1),  # what `run` + waiting for /readyz costs a user
        }
        REPORTS.append(report)
        box = Container(name, image(), http_port, grpc_port, token, models_dir, report)
        yield box
    finally:
        if "box" in locals():  # memory after the tests, models warm: what a pod's request must cover
            stats = run("stats", "--no-stream", "--format", "{{.MemUsage}}", name, check=False).stdout.strip()
            box.report["memory_after_tests"] = stats.split("/")[0].strip()
        run("stop", "-t", "10", name, check=False)  # SIGTERM: BentoML shuts down cleanly, or is killed after 10 s
        if request.session.testsfailed:
            (report_path.parent / "container.log").write_text(_logs(name))
        run("rm", "-f", name, check=False)
        if "box" in locals():
            box.report["tests_failed"] = request.session.testsfailed
            report_path.write_text(json.dumps(box.report, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter):
    for report in REPORTS:
        terminalreporter.section("container")
        terminalreporter.write_line(
            f"{report['image']}: {report['image_size_mb']} MB; ready {report['time_to_ready_s']} s after `run` "
            f"(create {report['create_s']} s, start to /readyz {report['start_to_ready_s']} s); "
            f"memory after the tests {report.get('memory_after_tests', '?')}")
