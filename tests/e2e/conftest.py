"""End-to-end fixtures: the repository served by a real `bentoml serve` subprocess (BentoML HTTP
endpoints, OIP REST and OIP gRPC), on free ports.

`served` (module scope) starts one server for the test module that asks for it, waits until
/readyz and /v2/health/ready answer 200, and stops it when the module ends, passed or failed:
SIGTERM to the server's process group, SIGKILL after 30 s. A module changes the server's
environment by overriding the `served_env` fixture:

    @pytest.fixture(scope="module")
    def served_env():
        return {"VISIONZOO_MAX_BATCH_SIZE": "8"}

Models come from tests/serving/toy_models.py (the shipped exported_models/ when complete).
`bentoml_serve()` is the same thing as a context manager, for benchmarks and scripts; with
`tls=(certfile, keyfile)` it serves HTTPS (`bentoml serve --ssl-certfile/--ssl-keyfile`), and
`Served.verify` is what an httpx client needs to trust it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = float(os.environ.get("VISIONZOO_E2E_READY_TIMEOUT", "300"))
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Served:
    """A running `bentoml serve`: its base URL, gRPC port, models folder and log."""

    url: str
    http_port: int
    grpc_port: int
    models_dir: Path
    log_path: Path
    process: subprocess.Popen
    verify: Any = True  # httpx's `verify`: an SSLContext trusting the server's certificate when it serves HTTPS

    @property
    def http_address(self) -> str:
        """host:port, the form tritonclient.http takes."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, characters: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=30).text


def _environment(http_port: int, grpc_port: int, models_dir: Path, overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}  # bentoml serve makes its own
    env.update({
        "VISIONZOO_MODELS_DIR": str(models_dir),
        "VISIONZOO_GRPC_PORT": str(grpc_port),
        "VISIONZOO_WARMUP_BATCH_SIZES": "1,4",
        "BENTOML_DO_NOT_TRACK": "True",
    })
    env.update(overrides)
    return env


def _wait_until_ready(served: Served, deadline: float) -> None:
    with httpx.Client(timeout=5, verify=served.verify) as client:
        while time.monotonic() < deadline:
            if served.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {served.process.returncode}:\n{served.log_tail()}")
            try:
                if all(client.get(served.url + path).status_code == 200 for path in ("/readyz", "/v2/health/ready")):
                    return
                # every model settled and one refused: waiting longer will not help. (All "ready" is not
                # refused: the worker turns ready just after its last model is, see ModelSet.ready.)
                status = client.post(served.url + "/models", json={})
                states = [m.get("state") for m in status.json().values()] if status.status_code == 200 else [None]
                if all(state not in ("loading", None) for state in states) and any(state != "ready" for state in states):
                    raise RuntimeError(f"bentoml serve started but a model is refused: {status.text}\n{served.log_tail()}")
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"bentoml serve not ready after {READY_TIMEOUT_S:.0f}s:\n{served.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (arbiter and workers), SIGKILL what is left after 30 s,
    workers that run in process groups of their own included (found before the arbiter goes: once
    it has, they are orphans nobody waits for)."""
    import psutil

    workers: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        workers = psutil.Process(process.pid).children(recursive=True)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived the arbiter
    process.wait()
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.kill()


@contextlib.contextmanager
def bentoml_serve(env: dict[str, str] | None = None, models_dir: Path | None = None,
                  log_dir: Path | None = None, tls: tuple[Path, Path] | None = None) -> Iterator[Served]:
    """Serve the repository (bentofile.yaml) on free ports until the block ends; the server log
    goes to `log_dir` (a new temporary folder by default) as serve.log. `tls`: (certificate file,
    key file) to serve HTTPS."""
    if models_dir is None:
        from tests.serving.toy_models import models_root

        models_dir = models_root()
    http_port, grpc_port = free_port(), free_port()
    log_path = Path(log_dir or tempfile.mkdtemp(prefix="visionzoo-serve-")) / "serve.log"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", ".", "--host", "127.0.0.1", "--port", str(http_port)]
    scheme, verify = "http", True
    if tls is not None:
        command += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        scheme, verify = "https", ssl.create_default_context(cafile=str(tls[0]))
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=_environment(http_port, grpc_port, models_dir, env or {}),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(f"{scheme}://127.0.0.1:{http_port}", http_port, grpc_port, models_dir, log_path, process, verify)
    try:
        _wait_until_ready(served, time.monotonic() + READY_TIMEOUT_S)
        yield served
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def served_env() -> dict[str, str]:
    """Extra environment for the module's server (override in a test module)."""
    return {}


@pytest.fixture(scope="module")
def served(served_env, tmp_path_factory) -> Iterator[Served]:
    """A running server for this module; its log is in pytest's temporary folder (serve*/serve.log)."""
    with bentoml_serve(served_env, log_dir=tmp_path_factory.mktemp("serve")) as server:
        yield server
