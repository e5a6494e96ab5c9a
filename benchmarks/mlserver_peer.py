"""Seldon MLServer 1.7.1 as a benchmark peer: the same ONNX file behind MLServer's OIP v2 HTTP and
gRPC servers, so one load generator (benchmarks/loadgen.py) can drive both servers.

MLServer runs from a venv of its own (`ensure_venv`; python3.11, mlserver 1.7.1 and
onnxruntime-gpu 1.31.1, the build the project's venv uses; its CPU provider is the one used), with
the custom runtime benchmarks/mlserver_runtime/onnx_runtime.py (`OnnxModel`), whose session options
copy the service's CPU options (ORT_ENABLE_ALL, inter-op 1, no spinning, intra-op threads = every
core unless `threads` is set).

Versions that install together (pip check clean): mlserver 1.7.1, onnxruntime-gpu 1.31.1,
uvloop 0.21.0, grpcio 1.85.3, protobuf 6.33.6, numpy 2.4.6, pydantic 2.14.4, fastapi 0.115.14,
uvicorn 0.54.0, tritonclient 2.73.0 (mlserver's own dependency). `ensure_venv` pins the first
three and lets pip resolve the rest; `venv_versions()` reports what a venv actually holds.
uvloop must stay below 0.22: mlserver 1.7.1 leaves it unpinned, and with uvloop >= 0.22
`asyncio.get_event_loop()` raises in a fresh process, so every inference-pool worker dies at start
("Worker process stopped unexpectedly"; parallel_workers=0 alone would still work).

Adaptive batching is on (`max_batch_size`, `max_batch_time` in model-settings.json). Note that
MLServer counts `max_batch_size` in *requests*, not images: it merges up to that many queued
requests, concatenating their inputs along the first dimension (8-image requests at
max_batch_size=32 can make a 256-image batch), and splits the outputs back per request.

parallel_workers (MLServer's inference pool; 0 runs the model in the server process): the default
here is 0. On this 2-core machine a 5-second closed loop, 8 clients, 1-image gRPC requests, bloodcell
mobilenetv3, max_batch_size=32, max_batch_time=2 ms (`python -m benchmarks.mlserver_peer --probe`),
twice, with other work on the machine: 0 workers 236.6 and 239.8 images/s (p99 76.7 / 56.4 ms),
1 worker 168.8 and 199.4 images/s (p99 71.7 / 70.1 ms). With one worker every batch is pickled to
a second process and back over a multiprocessing queue and two processes compete for the 2 cores;
in-process, the batch goes straight from the batcher to the session.

What the peer costs per image is MLServer's own request path, left as it ships: the gRPC servicer
unpacks `raw_input_contents` into a Python list of floats (struct.unpack, 27,648 per 96x96x3 image),
pydantic validates it, adaptive batching concatenates the lists, and outputs go back the same way.
With 8-image requests (8 clients, 3 s) the peer served about 320 images/s at p99 ~230 ms here.

    from benchmarks.mlserver_peer import ensure_venv, start_mlserver
    ensure_venv()
    peer = start_mlserver("exported_models/bloodcell_mobilenetv3/4/model.onnx", "bloodcell", "image",
                          ["probabilities"], http_port=9080, grpc_port=9081)
    try:
        target = GrpcTarget("127.0.0.1:9081", "bloodcell", "image", images)
        result = asyncio.run(closed_loop(target, clients=8, warmup=1, duration=5))
        server = psutil.Process(peer.pid)                    # workers >= 1: add server.children()
        rss = server.memory_info().rss
    finally:
        peer.stop()

    python -m benchmarks.mlserver_peer            # self-check: parity with onnxruntime, then a 5 s load
    python -m benchmarks.mlserver_peer --probe    # parallel_workers 0 vs 1, 5 s each
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path("benchmarks/out/mlserver-venv")
RUNTIME_DIR = Path(__file__).resolve().parent / "mlserver_runtime"
MLSERVER_VERSION = "1.7.1"
ONNXRUNTIME = ("onnxruntime-gpu", "1.31.1")  # the project's build; it carries the CPU provider
UVLOOP = "uvloop==0.21.0"  # >= 0.22 breaks mlserver 1.7.1's inference-pool workers (see above)
DEFAULT_WORKERS = 0  # measured: see the module docstring


def _venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def _venv_works(python: Path) -> bool:
    if not python.exists():
        return False
    check = (f"import mlserver, onnxruntime, uvloop; assert mlserver.__version__ == {MLSERVER_VERSION!r}; "
             "assert 'CPUExecutionProvider' in onnxruntime.get_available_providers(); "
             "assert tuple(int(p) for p in uvloop.__version__.split('.')[:2]) < (0, 22)")
    return subprocess.run([str(python), "-c", check], capture_output=True, check=False).returncode == 0


def ensure_venv(path: Path = VENV) -> Path:
    """The MLServer venv's python, creating the venv first when it is missing or broken.

    python3.11, `pip install mlserver==1.7.1 onnxruntime-gpu==1.31.1 uvloop==0.21.0`; when that
    build of onnxruntime does not resolve with mlserver's pins, plain `onnxruntime` (whatever
    installs). A venv that already imports the right versions is kept as it is.
    """
    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    python = _venv_python(path)
    if _venv_works(python):
        return python
    base = shutil.which("python3.11") or "/usr/bin/python3.11"
    if path.exists():
        if not (path / "pyvenv.cfg").exists():
            raise RuntimeError(f"{path} exists and is not a venv; not replacing it")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    first = subprocess.run([*pip, f"mlserver=={MLSERVER_VERSION}", f"{ONNXRUNTIME[0]}=={ONNXRUNTIME[1]}", UVLOOP],
                           check=False)
    if first.returncode != 0:
        subprocess.run([*pip, f"mlserver=={MLSERVER_VERSION}", "onnxruntime", UVLOOP], check=True)
    if not _venv_works(python):
        raise RuntimeError(f"the MLServer venv at {path} does not import mlserver {MLSERVER_VERSION} and onnxruntime")
    return python


def venv_versions(python: Path | None = None) -> dict[str, str]:
    """Versions of the peer's main packages in the MLServer venv (for benchmark reports)."""
    python = python or _venv_python(ROOT / VENV)
    code = ("import json, importlib.metadata as m; names = ['mlserver', 'onnxruntime-gpu', 'onnxruntime', "
            "'grpcio', 'protobuf', 'numpy', 'pydantic', 'fastapi', 'uvicorn', 'uvloop']\n"
            "found = {}\nfor n in names:\n    try: found[n] = m.version(n)\n    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(found))")
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MLServerHandle:
    """A running `mlserver start`; `.pid` is the server process (inference workers are its children)."""

    process: subprocess.Popen
    folder: Path
    http_port: int
    grpc_port: int
    metrics_port: int | None
    model_name: str
    log_path: Path
    _log: object = field(repr=False, default=None)
    _owns_folder: bool = field(repr=False, default=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (MLServer stops its workers on it), SIGKILL to the group after `grace` seconds."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> MLServerHandle:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_mlserver(onnx_path, model_name: str, input_name: str, output_names, http_port: int, grpc_port: int,
                   max_batch_size: int = 32, max_batch_time: float = 0.002, workers: int = DEFAULT_WORKERS,
                   threads: int = 0, metrics: bool = True, metrics_port: int | None = None,
                   input_shape=None, report_batch_size: bool = False, python: Path | None = None,
                   folder: Path | None = None,
                   ready_timeout: float = 120.0) -> MLServerHandle:
    """Start MLServer serving `onnx_path` as `model_name` and wait until the model is ready.

    `workers` is MLServer's `parallel_workers` (0: in the server process; the measured default);
    `max_batch_size` counts requests (0 or 1 turns adaptive batching off); `threads` is the ORT
    intra-op thread count (0: every core, as the service); `metrics` keeps MLServer's Prometheus
    metrics (its default; our service has metrics too) on `metrics_port` (a free port when None).
    `report_batch_size` makes every response carry the merged batch size as the parameter
    `batch_size` (for checks only). `input_shape` (e.g. [-1, 96, 96, 3]) goes into the model's metadata.
    Settings and logs go to `folder` (a temporary folder, removed by `.stop()`, when None).
    """
    python = Path(python) if python else _venv_python(ROOT / VENV)
    if not python.exists():
        python = ensure_venv()
    onnx_path = Path(onnx_path).resolve()
    owns = folder is None
    folder = Path(tempfile.mkdtemp(prefix="mlserver-peer-")) if owns else Path(folder)
    model_folder = folder / "models" / model_name
    model_folder.mkdir(parents=True, exist_ok=True)
    if metrics and metrics_port is None:
        metrics_port = free_port()
    settings = {
        "debug": False,  # True adds an access-log interceptor on every gRPC call
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "grpc_max_message_length": 512 * 1024 * 1024,  # grpc's 4 MiB default is ~37 images at 96x96x3 fp32
        "parallel_workers": workers,
        "metrics_endpoint": "/metrics" if metrics else None,
        "metrics_port": metrics_port or free_port(),
        "metrics_dir": str(folder / "metrics"),
        "environments_dir": str(folder / "envs"),
        "load_models_at_startup": True,
    }
    model_settings = {
        "name": model_name,
        "implementation": "onnx_runtime.OnnxModel",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time,
        "parameters": {"uri": str(onnx_path), "version": "1",
                       "extra": {"input_name": input_name, "output_names": list(output_names), "threads": threads,
                                 "report_batch_size": report_batch_size}},
    }
    if input_shape is not None:
        model_settings["inputs"] = [{"name": input_name, "datatype": "FP32", "shape": list(input_shape)}]
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
    for key in [k for k in env if k.startswith("MLSERVER_")]:  # settings.json is the whole configuration
        env.pop(key)
    mlserver = python.parent / "mlserver"
    log_path = folder / "mlserver.log"
    log = open(log_path, "wb")  # noqa: SIM115 - held by the handle, closed by stop()
    process = subprocess.Popen([str(mlserver), "start", str(folder)], cwd=folder, env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    handle = MLServerHandle(process, folder, http_port, grpc_port, metrics_port if metrics else None, model_name,
                            log_path, log, owns)
    url = f"http://127.0.0.1:{http_port}/v2/models/{model_name}/ready"
    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            tail = handle.log_tail()
            handle.stop()
            raise RuntimeError(f"mlserver exited with {process.returncode} before the model was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = handle.log_tail()
            handle.stop()
            raise TimeoutError(f"mlserver: {model_name} not ready after {ready_timeout:.0f} s:\n{tail}")
        time.sleep(0.25)
    return handle


# --- self-check ------------------------------------------------------------------------------------

BLOODCELL = max((ROOT / "exported_models" / "bloodcell_mobilenetv3").glob("[0-9]*"), key=lambda p: int(p.name))  # newest


def _model_description(folder: Path) -> tuple[Path, str, list[str], list[int]]:
    from benchmarks.loadgen import answer_outputs

    metadata = json.loads((folder / "metadata.json").read_text())
    found = metadata["inputs"][0]
    return folder / "model.onnx", found["name"], answer_outputs(metadata), found["shape"]


def _infer(address: str, model: str, input_name: str, images, outputs: list[str]) -> dict:
    """One OIP ModelInfer over grpc (tritonclient's protobufs, as loadgen.GrpcTarget sends it)."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(address, options=options) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    found = {}
    for index, output in enumerate(response.outputs):
        assert output.datatype == "FP32", output.datatype
        data = (np.frombuffer(response.raw_output_contents[index], np.float32) if response.raw_output_contents
                else np.array(output.contents.fp32_contents, np.float32))
        found[output.name] = data.reshape(list(output.shape))
    return found


async def _concurrent_infer(address: str, model: str, input_name: str, batches) -> list:
    """Several requests at once so adaptive batching merges them: each response's first output and
    the merged batch size the server reports for it (`report_batch_size`)."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def one(images):
            request = pb.ModelInferRequest(model_name=model)
            request.inputs.add(name=input_name, datatype="FP32", shape=list(images.shape))
            request.raw_input_contents.append(np.ascontiguousarray(images).tobytes())
            response = await stub.ModelInfer(request, timeout=60)
            merged = response.parameters["batch_size"].int64_param if "batch_size" in response.parameters else None
            output = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(list(response.outputs[0].shape))
            return output, merged

        return await asyncio.gather(*(one(b) for b in batches))


def _load(address: str, model: str, input_name: str, images_per_request: int, clients: int, duration: float,
          warmup: float = 1.0) -> dict:
    """loadgen's closed loop over gRPC with random images; its summary (images/s, p50/p99 ms, ...)."""
    import numpy as np

    from benchmarks.loadgen import GrpcTarget, closed_loop

    images = np.random.default_rng(1).uniform(0, 255, (images_per_request, 96, 96, 3)).astype(np.float32)
    target = GrpcTarget(address, model, input_name, images)
    with warnings.catch_warnings():  # loadgen's error p99 over no errors is a NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        result = asyncio.run(closed_loop(target, clients=clients, warmup=warmup, duration=duration,
                                         images_per_request=images_per_request))
        return result.summary()


def _golden_images(folder: Path, shape: list[int], count: int):
    """The export's golden JPEGs resized to the model's input (bilinear, RGB, 0..255 float32), then
    random images up to `count`: real images make the argmax differ across the batch."""
    import numpy as np
    from PIL import Image

    height, width = shape[1], shape[2]
    files = json.loads((folder / "golden" / "inputs.json").read_text())["inputs"]
    found = []
    for entry in files[:count]:
        image = Image.open(folder / "golden" / entry["file"]).convert("RGB").resize((width, height), Image.BILINEAR)
        found.append(np.asarray(image, dtype=np.float32))
    rng = np.random.default_rng(0)
    found += list(rng.uniform(0, 255, (count - len(found), height, width, shape[3])).astype(np.float32))
    return np.stack(found)


def self_check(duration: float = 5.0, clients: int = 8) -> None:
    import numpy as np
    import onnxruntime as ort

    onnx_path, input_name, outputs, shape = _model_description(BLOODCELL)
    python = ensure_venv()
    print("mlserver venv:", json.dumps(venv_versions(python)))
    direct = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = _golden_images(BLOODCELL, shape, 8)
    expected = direct.run(outputs, {input_name: images})[0]

    started = time.perf_counter()
    peer = start_mlserver(onnx_path, "bloodcell", input_name, outputs, free_port(), free_port(), input_shape=shape,
                          report_batch_size=True)
    print(f"mlserver ready in {time.perf_counter() - started:.1f} s (pid {peer.pid}, grpc {peer.grpc_port}, "
          f"parallel_workers {DEFAULT_WORKERS}, max_batch_size 32, max_batch_time 0.002)")
    try:
        served = _infer(peer.grpc_address, "bloodcell", input_name, images[:1], outputs)[outputs[0]]
        print(f"1 image : served argmax {served.argmax(1).tolist()} direct {expected[:1].argmax(1).tolist()} "
              f"max|diff| {np.abs(served - expected[:1]).max():.2e}")
        assert served.shape == (1, expected.shape[1]) and (served.argmax(1) == expected[:1].argmax(1)).all()

        served = _infer(peer.grpc_address, "bloodcell", input_name, images, outputs)[outputs[0]]
        print(f"8 images: served argmax {served.argmax(1).tolist()} direct {expected.argmax(1).tolist()} "
              f"max|diff| {np.abs(served - expected).max():.2e}")
        assert served.shape == expected.shape and (served.argmax(1) == expected.argmax(1)).all()

        # adaptive batching: concurrent requests of several sizes merge along dim 0 and split back in order
        sizes = [8, 1, 8, 3, 8, 2]
        many = np.concatenate([np.roll(images, i, axis=0)[:n] for i, n in enumerate(sizes)])
        expected_many = direct.run(outputs, {input_name: many})[0]
        pieces = np.split(many, np.cumsum(sizes)[:-1])
        answers = asyncio.run(_concurrent_infer(peer.grpc_address, "bloodcell", input_name, pieces))
        got = np.concatenate([a for a, _ in answers])
        print(f"concurrent requests of {sizes} images -> response shapes {[list(a.shape) for a, _ in answers]}, "
              f"merged batch sizes the runtime ran {[m for _, m in answers]}, "
              f"argmax match {bool((got.argmax(1) == expected_many.argmax(1)).all())}, "
              f"max|diff| {np.abs(got - expected_many).max():.2e}")
        assert [a.shape[0] for a, _ in answers] == sizes and (got.argmax(1) == expected_many.argmax(1)).all()
        assert max(m for _, m in answers) > 8, "adaptive batching merged nothing"
    finally:
        peer.stop()

    peer = start_mlserver(onnx_path, "bloodcell", input_name, outputs, free_port(), free_port(), input_shape=shape)
    try:
        summary = _load(peer.grpc_address, "bloodcell", input_name, 1, clients, duration)
        print(f"closed loop {duration:.0f} s (after 1 s warm-up), {clients} clients, 1-image gRPC requests: "
              f"{summary['images_per_s']} images/s, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
              f"errors {summary['errors']} {summary['error_kinds'] or ''}")
    finally:
        code = peer.stop()
        print(f"mlserver stopped (exit {code})")


def probe_workers(duration: float = 5.0, clients: int = 8) -> dict[int, dict]:
    """parallel_workers 0 vs 1: the same short closed loop against each."""
    onnx_path, input_name, outputs, _ = _model_description(BLOODCELL)
    ensure_venv()
    found = {}
    for workers in (0, 1):
        peer = start_mlserver(onnx_path, "bloodcell", input_name, outputs, free_port(), free_port(), workers=workers)
        try:
            summary = _load(peer.grpc_address, "bloodcell", input_name, 1, clients, duration)
        finally:
            peer.stop()
        found[workers] = summary
        print(f"parallel_workers={workers}: {summary['images_per_s']} images/s, p50 {summary['p50_ms']} ms, "
              f"p99 {summary['p99_ms']} ms, errors {summary['errors']}")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", action="store_true", help="compare parallel_workers 0 and 1 instead")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    if args.probe:
        probe_workers(args.duration, args.clients)
    else:
        self_check(args.duration, args.clients)


if __name__ == "__main__":
    sys.exit(main())
