"""The service under load, side by side in one run: every protocol, client count and request size,
batching on and off, latency before and after a burst, overload shedding, memory and cold start,
and Seldon MLServer 1.7.1 serving the same ONNX file driven by the same load generator.

    python -m benchmarks.service_bench [--duration 8] [--warmup 2] [--skip-mlserver]

Starts `bentoml serve` on the shipped models (exported_models/) and measures, for the blood-cell
model (the smallest, so the serving path is what shows), with real golden JPEGs:

- cold start (process start to /readyz 200, all three models), first with the engines racing and
  again with their choice cached, and RSS after warm-up (every process);
- the 1-client p50 on every protocol, fresh;
- closed-loop images/s and p50/p99 over OIP gRPC, OIP REST (binary tensors) and the multipart
  endpoint at 1/8/32/64 clients, with 1- and 8-image requests;
- the 1-client p50 right after 8 s of 64 clients, and again after 20 s idle;
- one gRPC stream (ModelStreamInfer) against 32 unary clients, and an X-ray request's input in system
  shared memory against the same tensor in the message (the server runs with shared memory on);
- overload: an open loop at 4x the measured capacity; how fast the excess is refused, the p99 of
  what is accepted against the p99 at capacity, and how long until 1-client latency is back;
- a second server with VISIONZOO_BATCHING=off at 64 clients (batching on / off);
- MLServer (benchmarks/mlserver_peer.py, its own venv) over gRPC at the same points.

Writes benchmarks/out/service_bench.json. Client and server share the machine's cores: compare rows
of one run with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks.loadgen import (
    GrpcSharedMemoryTarget,
    GrpcTarget,
    LoadResult,
    MultipartTarget,
    RestTarget,
    answer_outputs,
    closed_loop,
    one_stream,
    open_loop,
)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
MODEL, EXPORT = "bloodcell", "bloodcell_mobilenetv3"
# Overload is driven on the Mars model (128x256 tiles, 128 KiB each; version 4: 64x128, 32 KiB): at 4x the blood-cell model's ~900 requests/s (or the
# X-ray model's 600 KiB tensors) the transport and the load generator, on the same two cores, saturate
# before the server's queue does.
OVERLOAD_MODEL, OVERLOAD_EXPORT = "mars", "mars_dual_unet"
# Shared memory pays where tensors are large: the X-ray model's 320x320 inputs (1.2 MiB each as FP32).
SHARED_MEMORY_MODEL, SHARED_MEMORY_EXPORT = "mura", "mura_multitask_resnet"
CLIENTS = (1, 8, 32, 64)
IMAGES = (1, 8)
PROTOCOLS = ("grpc", "rest", "multipart")


def golden_requests(model: str = MODEL, export: str = EXPORT) -> tuple[list[tuple[str, bytes]], np.ndarray, str]:
    """The newest export's golden files (bytes) and the same images as the model's FP32 input,
    decoded exactly as the service decodes them; and the model's input name."""
    from visionzoo.serving.repository import load_version

    version = load_version(model, export, REPO / "exported_models")
    from visionzoo.preprocessing import prepare_image, prepare_tiles

    files = [(name, (version.folder / "golden" / name).read_bytes()) for name in version.metadata["golden"]["files"]]
    if version.spec.tiling != "none":  # tiled models (Mars) take tiles: the first tile of each file
        pixels = np.stack([prepare_tiles(data, version.spec, name)[0] for name, data in files]).astype(np.float32)
    else:
        pixels = np.stack([prepare_image(data, version.spec, name) for name, data in files]).astype(np.float32)
    return files, pixels, version.inputs[0]["name"]


def requested_outputs(model: str = MODEL, export: str = EXPORT) -> list[str]:
    """The outputs OIP clients name: the answer, not the Grad-CAM map (as a client wanting only the
    answer asks; a request that names none gets every output, the map included)."""
    from visionzoo.serving.repository import load_version

    return answer_outputs(load_version(model, export, REPO / "exported_models").metadata)


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its children, MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a process (and its children) so far."""
    try:
        root = psutil.Process(pid)
        processes = [root, *(root.children(recursive=True) if children else ())]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def sized(files: list[tuple[str, bytes]], pixels: np.ndarray, count: int) -> tuple[list, np.ndarray]:
    """`count` images, cycling through the golden ones."""
    index = [i % len(files) for i in range(count)]
    return [files[i] for i in index], pixels[index]


class Endpoints:
    """Targets for one running server."""

    def __init__(self, url: str, grpc_address: str, files, pixels, input_name: str, model: str = MODEL,
                 export: str = EXPORT) -> None:
        self.url, self.grpc_address, self.files, self.pixels, self.input_name = url, grpc_address, files, pixels, input_name
        self.model, self.outputs = model, requested_outputs(model, export)

    def target(self, protocol: str, images: int):
        files, pixels = sized(self.files, self.pixels, images)
        if protocol == "grpc":
            return GrpcTarget(self.grpc_address, self.model, self.input_name, pixels, outputs=self.outputs)
        if protocol == "rest":
            return RestTarget(self.url, self.model, self.input_name, pixels, outputs=self.outputs)
        return MultipartTarget(self.url, f"/{self.model}/predict", files)

    def of(self, model: str, export: str) -> Endpoints:
        files, pixels, input_name = golden_requests(model, export)
        return Endpoints(self.url, self.grpc_address, files, pixels, input_name, model, export)


def point(result: LoadResult, **labels) -> dict:
    row = {**labels, **result.summary()}
    print(json.dumps({k: v for k, v in row.items() if k not in ("error_kinds",)}), flush=True)
    return row


async def probe_p50(endpoints: Endpoints, protocol: str, seconds: float) -> float:
    result = await closed_loop(endpoints.target(protocol, 1), 1, 0.3, seconds)
    return result.percentile(50)


async def service_runs(endpoints: Endpoints, warmup: float, duration: float, pid: int) -> dict:
    found: dict = {"fresh_p50_ms": {}, "grid": [], "hangover": {}, "overload": {}}
    for protocol in PROTOCOLS:
        found["fresh_p50_ms"][protocol] = round(await probe_p50(endpoints, protocol, 3.0), 2)
    found["rss_mib_after_warmup"] = round(tree_rss_mib(pid), 1)
    for protocol in PROTOCOLS:
        for images in IMAGES:
            for clients in CLIENTS:
                before = cpu_seconds(pid), cpu_seconds(os.getpid(), children=False), time.perf_counter()
                result = await closed_loop(endpoints.target(protocol, images), clients, warmup, duration, images)
                elapsed = time.perf_counter() - before[2]
                found["grid"].append(point(result, protocol=protocol, images_per_request=images,
                                           server_cores=round((cpu_seconds(pid) - before[0]) / elapsed, 2),
                                           client_cores=round((cpu_seconds(os.getpid(), children=False) - before[1]) / elapsed, 2)))
    # Latency hangover: fresh, right after a burst, after idle (gRPC, 1 image).
    fresh = await probe_p50(endpoints, "grpc", 3.0)
    burst = await closed_loop(endpoints.target("grpc", 1), 64, 1.0, 8.0)
    after = await probe_p50(endpoints, "grpc", 3.0)
    await asyncio.sleep(20)
    idle = await probe_p50(endpoints, "grpc", 3.0)
    found["hangover"] = {"fresh_p50_ms": round(fresh, 2), "burst_images_per_s": round(burst.images_per_s, 1),
                         "after_burst_p50_ms": round(after, 2), "after_idle_p50_ms": round(idle, 2)}
    found["transports"] = await transport_runs(endpoints, warmup, duration)
    xray = endpoints.of(OVERLOAD_MODEL, OVERLOAD_EXPORT)
    found["overload"] = {"model": OVERLOAD_MODEL, **await overload(xray, await probe_p50(xray, "grpc", 3.0), warmup, duration)}
    found["rss_mib_after_load"] = round(tree_rss_mib(pid), 1)
    return found


async def transport_runs(endpoints: Endpoints, warmup: float, duration: float) -> dict:
    """The gRPC transports beside plain ModelInfer: one ModelStreamInfer stream against 32 unary
    clients (blood cells, 1-image requests), and the input in system shared memory against the same
    tensor in the message (1 client, the X-ray model's 8-image requests: 9.4 MiB each)."""
    found: dict = {}
    unary = await closed_loop(endpoints.target("grpc", 1), 32, warmup, duration)
    stream = await one_stream(endpoints.target("grpc", 1), warmup, duration)
    found["stream"] = {"unary_32_clients": point(unary, protocol="grpc", images_per_request=1),
                       "one_stream": point(stream, protocol="grpc-stream", images_per_request=1)}
    xray = endpoints.of(SHARED_MEMORY_MODEL, SHARED_MEMORY_EXPORT)
    _, batch = sized([None] * len(xray.pixels), xray.pixels, 8)
    plain = GrpcTarget(xray.grpc_address, xray.model, xray.input_name, batch, outputs=xray.outputs)
    shared = GrpcSharedMemoryTarget(xray.grpc_address, xray.model, xray.input_name, batch, outputs=xray.outputs)
    found["shared_memory"] = {"model": xray.model, "images_per_request": 8, "mib_per_request": round(batch.nbytes / 2**20, 1),
                              "message": point(await closed_loop(plain, 1, warmup, duration, 8), protocol="grpc", images_per_request=8),
                              "shared_memory": point(await closed_loop(shared, 1, warmup, duration, 8), protocol="grpc-shm",
                                                     images_per_request=8)}
    return found


async def overload(endpoints: Endpoints, baseline_p50: float, warmup: float, duration: float) -> dict:
    """Open loop at the capacity the closed loop found, then at 4x; then time to 1-client baseline."""
    # Capacity from up to 16 closed-loop clients: enough to keep the batcher busy, and no more than
    # the queue holds (the clients it refuses would retry at once, measuring how fast refusals come
    # back and taking the cores from the engine instead).
    answer = await asyncio.to_thread(httpx.post, f"{endpoints.url}/models", json={}, timeout=30)
    status = answer.json()[endpoints.model]
    clients = min(16, status["batching"]["max_queue_size"])
    capacity = await closed_loop(endpoints.target("grpc", 1), clients, warmup, duration)
    rate = capacity.requests_per_s
    at_capacity = await open_loop(endpoints.target("grpc", 1), rate, warmup, duration)
    flood = await open_loop(endpoints.target("grpc", 1), 4 * rate, warmup, duration)
    stopped = time.perf_counter()
    recovered_after = None
    while time.perf_counter() - stopped < 30:
        p50 = (await closed_loop(endpoints.target("grpc", 1), 1, 0.0, 0.5)).percentile(50)
        if p50 <= 1.2 * baseline_p50 + 0.5:
            recovered_after = time.perf_counter() - stopped
            break
    shed = np.array(flood.error_latencies_ms) if flood.error_latencies_ms else np.array([np.nan])
    return {
        "capacity_requests_per_s": round(rate, 1),
        "capacity_clients": clients,
        "at_capacity": at_capacity.summary(),
        "at_4x": flood.summary(),
        "offered_per_s": round(4 * rate, 1),
        "shed_fraction": round(flood.errors / max(1, flood.errors + flood.requests), 3),
        "shed_p50_ms": round(float(np.nanpercentile(shed, 50)), 2),
        "shed_p99_ms": round(float(np.nanpercentile(shed, 99)), 2),
        "accepted_p99_over_capacity_p99": round(flood.percentile(99) / at_capacity.percentile(99), 2),
        "recovered_after_s": None if recovered_after is None else round(recovered_after, 2),
    }


def wait_settled(url: str, timeout: float = 120.0) -> dict:
    """/models once no engine has deferred work left (OpenVINO's static shapes, compiled after ready)."""
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.post(f"{url}/models", json={}, timeout=30).json()
        if not any(model.get("pending_batch_sizes") for model in status.values()) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def start_times() -> dict:
    """Process start to ready, twice, on an engine cache of the benchmark's own: the first start races
    the engines for every model (a new machine, new model files or an unwritable home, as in a
    container), the second reads the choice from the cache (every later start). Also when the
    deferred engine work had finished (`settled_s`, from process start) and the RSS of every server
    process then."""
    from tests.e2e.conftest import bentoml_serve

    cache = OUT / "engine-cache.json"
    cache.unlink(missing_ok=True)
    found = {}
    for start in ("race", "cached"):
        started = time.perf_counter()
        with bentoml_serve({"VISIONZOO_WARMUP_BATCH_SIZES": "", "VISIONZOO_ENGINE_CACHE": str(cache)},
                           models_dir=REPO / "exported_models", log_dir=OUT) as served:
            ready_s = time.perf_counter() - started
            status = wait_settled(served.url)
            found[start] = {"ready_s": round(ready_s, 2), "settled_s": round(time.perf_counter() - started, 2),
                            "rss_mib_settled": round(tree_rss_mib(served.process.pid), 1),
                            "engines": {name: [model.get("engine"), model.get("chosen_by")] for name, model in status.items()}}
        print(json.dumps({"start": start, **found[start]}), flush=True)
    return found


def serve_and_measure(env: dict, files, pixels, input_name: str, job) -> dict:
    """Start `bentoml serve` on the shipped models with `env`, time its start, run `job` against it
    once the deferred engine work is done."""
    from tests.e2e.conftest import bentoml_serve

    started = time.perf_counter()
    with bentoml_serve({"VISIONZOO_WARMUP_BATCH_SIZES": "", **env}, models_dir=REPO / "exported_models",
                       log_dir=OUT) as served:
        ready_s = time.perf_counter() - started
        status = wait_settled(served.url)
        endpoints = Endpoints(served.url, served.grpc_address, files, pixels, input_name)
        found = asyncio.run(job(endpoints, served.process.pid))
    return {"ready_s": round(ready_s, 2), "models": status, **found}


async def batching_off_runs(endpoints: Endpoints, warmup: float, duration: float) -> dict:
    rows = []
    for images in IMAGES:
        result = await closed_loop(endpoints.target("grpc", images), 64, warmup, duration, images)
        rows.append(point(result, protocol="grpc", images_per_request=images, batching="off"))
    return {"grid": rows}


async def mlserver_runs(grpc_address: str, pixels: np.ndarray, input_name: str, warmup: float, duration: float) -> list[dict]:
    rows = []
    for images in IMAGES:
        _, batch = sized([None] * len(pixels), pixels, images)
        for clients in CLIENTS:
            target = GrpcTarget(grpc_address, MODEL, input_name, batch, outputs=requested_outputs())
            result = await closed_loop(target, clients, warmup, duration, images)
            rows.append(point(result, protocol="grpc", images_per_request=images, server="mlserver"))
    return rows


def mlserver(pixels: np.ndarray, input_name: str, warmup: float, duration: float) -> dict:
    from benchmarks import mlserver_peer
    from tests.e2e.conftest import free_port
    from visionzoo.serving.repository import load_version

    version = load_version(MODEL, EXPORT, REPO / "exported_models")
    python = mlserver_peer.ensure_venv()
    http_port, grpc_port = free_port(), free_port()
    started = time.perf_counter()
    handle = mlserver_peer.start_mlserver(version.onnx_path, MODEL, input_name, requested_outputs(),
                                          http_port, grpc_port, python=python)
    try:
        ready_s = time.perf_counter() - started
        rows = asyncio.run(mlserver_runs(f"127.0.0.1:{grpc_port}", pixels, input_name, warmup, duration))
        rss = tree_rss_mib(handle.pid)
    finally:
        handle.stop()
    return {"ready_s": round(ready_s, 2), "rss_mib": round(rss, 1), "grid": rows,
            "version": mlserver_peer.venv_versions(python).get("mlserver", "?")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per point (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point (default 2)")
    parser.add_argument("--skip-mlserver", action="store_true", help="do not build or run the MLServer peer")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    files, pixels, input_name = golden_requests()
    found: dict = {"settings": {"duration_s": args.duration, "warmup_s": args.warmup, "cpus": os.cpu_count(),
                                "load_average_before": os.getloadavg()}}

    def on(endpoints, pid):
        return service_runs(endpoints, args.warmup, args.duration, pid)

    def off(endpoints, pid):
        return batching_off_runs(endpoints, args.warmup, args.duration)

    found["starts"] = start_times()
    found["service"] = serve_and_measure({"VISIONZOO_SYSTEM_SHARED_MEMORY": "on"}, files, pixels, input_name, on)
    found["batching_off"] = serve_and_measure({"VISIONZOO_BATCHING": "off"}, files, pixels, input_name, off)
    if not args.skip_mlserver:
        try:
            found["mlserver"] = mlserver(pixels, input_name, args.warmup, args.duration)
        except Exception as error:  # noqa: BLE001 - the peer is optional; say why it is missing
            found["mlserver"] = {"error": f"{type(error).__name__}: {error}"}
    (OUT / "service_bench.json").write_text(json.dumps(found, indent=1))
    return found


if __name__ == "__main__":
    main()
