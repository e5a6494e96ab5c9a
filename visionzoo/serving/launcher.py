"""What `bentoml serve` opens besides the service, made private (bentoml 1.4.39).

`bentoml serve` imports the service module in its supervisor process (BentoML's circus arbiter)
before it starts anything; `harden_supervisor()`, called from that import, changes three things:

1. **No control port.** BentoML starts circus with its control and pub/sub endpoints on loopback
   TCP ports, where any local user can send `quit` or `signal` commands without credentials. They
   are moved to Unix sockets in a private (0700) folder of this server.
2. **Workers come back within a second.** Circus notices a dead worker only when it checks its
   watchers, which BentoML does every 10 s: a crashed (OOM-killed, kill -9) worker left the port
   unanswered for up to 10 s before its replacement even started. The check runs every second.
3. **Metrics of its own.** Every `bentoml serve` empties `~/bentoml/prometheus_multiproc_dir`
   when it starts, so a second server on the same host erased the first one's metrics. This
   server keeps its multi-process metrics in the same private folder instead.

The folder is removed when the supervisor exits. Worker processes (which inherit
PROMETHEUS_MULTIPROC_DIR) and in-process uses (tests, `visionzoo.load`) are left alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("visionzoo.serving")

_private: Path | None = None
WATCHER_CHECK_SECONDS = 1.0  # how often circus reaps and respawns dead workers (BentoML: 10)


def harden_supervisor() -> Path | None:
    """Called at import of the service module; a no-op except in a `bentoml serve` supervisor."""
    global _private
    if _private is not None or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return _private
    try:
        import bentoml._internal.utils.circus as circus_utils
        from bentoml._internal.configuration.containers import BentoMLContainer
    except ImportError:  # another BentoML layout: keep its defaults rather than break start-up
        logger.warning("cannot secure BentoML's supervisor (unknown BentoML version); its control port stays open")
        return None
    private = Path(tempfile.mkdtemp(prefix="visionzoo-serve-"))  # mode 0700
    metrics = private / "metrics"
    metrics.mkdir()
    BentoMLContainer.prometheus_multiproc_dir.set(str(metrics))

    def create_standalone_arbiter(watchers, *, threaded: bool = False, **kwargs):
        arbiter_class = circus_utils.ThreadedArbiter if threaded else circus_utils.Arbiter
        return arbiter_class(watchers, endpoint=f"ipc://{private}/control", pubsub_endpoint=f"ipc://{private}/pubsub",
                             check_delay=WATCHER_CHECK_SECONDS, **{k: v for k, v in kwargs.items() if k != "check_delay"})

    circus_utils.create_standalone_arbiter = create_standalone_arbiter
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    _private = private
    return private


def worker_option(name: str, argv: list[str] | None = None) -> str | None:
    """The value of option `name` (`--name value` or `--name=value`) in a BentoML worker's command
    line (`argv`, default sys.argv); None when it is not given."""
    argv = sys.argv if argv is None else argv
    for index, argument in enumerate(argv):
        given, equals, value = argument.partition("=")
        if given == name:
            return value if equals else (argv[index + 1] if index + 1 < len(argv) else None)
    return None


def http_socket_fd() -> int | None:
    """In a BentoML worker: the file descriptor of the HTTP socket circus passed with `--fd` (the
    supervisor owns the socket; every worker holds a copy). None elsewhere."""
    try:
        return int(worker_option("--fd"))
    except (TypeError, ValueError):
        return None


def http_socket_host() -> str | None:
    """In a BentoML worker: the address its HTTP socket is bound to (`bentoml serve --host`), read
    from the socket circus passed with `--fd` (so gRPC can bind the same interface)."""
    import socket

    fd = http_socket_fd()
    if fd is None:
        return None
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.getsockname()[0]
    except OSError:
        return None


def stop_supervisor(reason: str) -> bool:
    """In a `bentoml serve` worker: stop the whole server (SIGTERM to its supervisor) for a fault a
    restart cannot mend, such as a port another process holds. Circus restarts a worker that exits,
    forever: the server would neither serve nor stop. False (and nothing done) elsewhere."""
    if "--fd" not in sys.argv or "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return False
    parent = os.getppid()
    try:
        command = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(Path(os.fsdecode(part)).name == "bentoml" for part in command[:2]):
        return False
    logger.error("%s; stopping the server (a restarted worker would fail the same way)", reason)
    os.kill(parent, signal.SIGTERM)
    return True
