"""A real, bounded overload of one model with small queue limits (VISIONZOO_MARS_MAX_QUEUE_SIZE=64
items, VISIONZOO_MARS_QUEUE_TIMEOUT_US=200000) and batches of four tiles (the manifest's one tile per
run would leave a 4-tile request's last tile waiting past that timeout on an idle server). Mars
(~120-330 ms of engine time per 128x256 tile on two cores, by version; 128 KiB of input) makes the engine the
bottleneck; an overload of bloodcell at several times its capacity
(~900 images/s here) moves ~400 MB/s of tensors and saturates the transport and the client first,
so it measures the event loop, not shedding.

1. the 1-client latency (baseline) and what the server does at capacity (a closed loop);
2. an open loop over OIP gRPC at several times capacity for ~5 s, with OIP REST and multipart uploads
   mixed in: the excess is refused at once (gRPC UNAVAILABLE; HTTP 503 with Retry-After), faster than
   the accepted requests are answered, and every request gets an answer (no client-side timeout);
3. after the load stops, the 1-client latency is back near its baseline within 10 s.

The bounds are loose (a loaded 2-core CI machine); the figures are printed (pytest -s) and belong in
benchmarks for the strict numbers.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.loadgen import GrpcTarget, closed_loop, open_loop
from tests.conftest import shipped_golden, shipped_input_shape

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODEL = "mars"
GOLDEN = sorted(shipped_golden("mars_dual_unet").glob("*.jpg"))
SHAPE = shipped_input_shape("mars_dual_unet")  # one model tile
IMAGES_PER_REQUEST = 4  # tiles per gRPC / REST request; multipart uploads send one golden image
OVERLOAD_FACTOR = 4
OVERLOAD_SECONDS = 5.0
MAX_OFFERED_RPS = 600  # what the load generator can start on a shared 2-core machine


@pytest.fixture(scope="module")
def served_env():
    return {"VISIONZOO_MARS_MAX_BATCH_SIZE": "4", "VISIONZOO_MARS_MAX_QUEUE_SIZE": "64",
            "VISIONZOO_MARS_QUEUE_TIMEOUT_US": "200000", "VISIONZOO_WARMUP_BATCH_SIZES": "1,4"}


@pytest.fixture(scope="module")
def input_name(served) -> str:
    return httpx.get(f"{served.url}/v2/models/{MODEL}", timeout=30).json()["inputs"][0]["name"]


def images(count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, *SHAPE)).astype(np.float32)


def one_client_p50(address: str, name: str, seconds: float) -> float:
    result = asyncio.run(closed_loop(GrpcTarget(address, MODEL, name, images(1), timeout=30),
                                     clients=1, warmup=0.2, duration=seconds))
    assert result.errors == 0, result.error_kinds
    return result.percentile(50)


async def http_mix(url: str, name: str, seconds: float) -> list[tuple[str, int, str | None, float]]:
    """Multipart uploads and OIP REST requests (IMAGES_PER_REQUEST images each) every 50 ms for
    `seconds`, not waiting for answers: (kind, status, Retry-After, seconds)."""
    raw = images(IMAGES_PER_REQUEST).tobytes()
    header = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [IMAGES_PER_REQUEST, *SHAPE],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    files = [("images", (GOLDEN[0].name, GOLDEN[0].read_bytes(), "image/jpeg"))]
    answers = []
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def send(kind: str) -> None:
            started = time.perf_counter()
            try:
                if kind == "multipart":
                    response = await client.post(f"/{MODEL}/segment", files=files)
                else:
                    response = await client.post(f"/v2/models/{MODEL}/infer", content=header + raw, headers={
                        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
                answers.append((kind, response.status_code, response.headers.get("retry-after"), time.perf_counter() - started))
            except httpx.HTTPError as error:
                answers.append((kind, type(error).__name__, None, time.perf_counter() - started))

        tasks = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            tasks += [asyncio.create_task(send("multipart")), asyncio.create_task(send("rest"))]
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)
    return answers


def test_overload_is_shed_quickly_and_recovers(served, input_name):
    address = served.grpc_address
    baseline = one_client_p50(address, input_name, 2.0)
    batch = images(IMAGES_PER_REQUEST)
    # At capacity nearly every queued request outlives the 200 ms queue timeout behind a running
    # batch, so only about one request per engine run is answered: measure over several runs
    # (a 4-tile run took 1.3-1.7 s of the shipped ensemble here; 3 s once caught none)
    engine_run_s = IMAGES_PER_REQUEST * baseline / 1000
    capacity = asyncio.run(closed_loop(GrpcTarget(address, MODEL, input_name, batch, timeout=30), clients=8,
                                       warmup=max(0.5, engine_run_s), duration=max(3.0, 8 * engine_run_s),
                                       images_per_request=IMAGES_PER_REQUEST))
    assert capacity.requests > 0, capacity.error_kinds
    rate = min(MAX_OFFERED_RPS, OVERLOAD_FACTOR * capacity.requests_per_s)

    async def overload():
        grpc_load = open_loop(GrpcTarget(address, MODEL, input_name, batch, timeout=30), rate=rate,
                              warmup=0.0, duration=OVERLOAD_SECONDS, images_per_request=IMAGES_PER_REQUEST)
        return await asyncio.gather(grpc_load, http_mix(served.url, input_name, OVERLOAD_SECONDS))

    loaded, http_answers = asyncio.run(overload())
    stopped = time.monotonic()
    recovered_after, recovered_p50 = None, None
    # each probe's window must hold whole requests: a 0.5 s window held none once a request took 395 ms
    # (only requests that start after the 0.2 s warm-up and end inside the window count), so none recovered
    probe_s = max(0.5, 3 * baseline / 1000)
    while time.monotonic() - stopped < 20:
        recovered_p50 = one_client_p50(address, input_name, probe_s)
        if recovered_p50 <= max(2 * baseline, baseline + 10):
            recovered_after = time.monotonic() - stopped
            break

    shed = np.array(loaded.error_latencies_ms)
    accepted = np.array(loaded.latencies_ms)
    http_503 = [a for a in http_answers if a[1] == 503]
    figures = {
        "baseline_1_client_p50_ms": round(baseline, 2),
        "capacity_requests_per_s": round(capacity.requests_per_s, 1),
        "capacity_images_per_s": round(capacity.images_per_s, 1),
        "at_capacity_p50_ms": round(capacity.percentile(50), 1), "at_capacity_p99_ms": round(capacity.percentile(99), 1),
        "offered_requests_per_s": round(rate, 1),
        "grpc_accepted": int(accepted.size), "grpc_shed": int(shed.size), "grpc_error_kinds": loaded.error_kinds,
        "accepted_p50_ms": round(float(np.percentile(accepted, 50)), 1) if accepted.size else None,
        "accepted_p99_ms": round(float(np.percentile(accepted, 99)), 1) if accepted.size else None,
        "shed_p50_ms": round(float(np.percentile(shed, 50)), 2) if shed.size else None,
        "shed_p99_ms": round(float(np.percentile(shed, 99)), 2) if shed.size else None,
        "http": {kind: {str(s): sum(1 for a in http_answers if a[0] == kind and a[1] == s)
                        for s in sorted({a[1] for a in http_answers}, key=str)} for kind in ("multipart", "rest")},
        "http_503_p50_ms": round(1000 * float(np.median([a[3] for a in http_503])), 1) if http_503 else None,
        "recovered_after_s": round(recovered_after, 2) if recovered_after is not None else None,
        "recovered_1_client_p50_ms": round(recovered_p50, 2),
    }
    print("\noverload:", json.dumps(figures))

    # every request was answered: accepted, or refused as overloaded; nothing timed out client-side
    assert set(loaded.error_kinds) <= {"UNAVAILABLE"}, loaded.error_kinds
    assert loaded.requests + loaded.errors > 0
    assert shed.size > 0, f"{rate:.0f} requests/s (capacity {capacity.requests_per_s:.0f}) shed nothing: {figures}"
    # refused at once (queue full) or at the 200 ms queue timeout, not after waiting for a batch;
    # the margin is the event loop's lag on a loaded 2-core machine
    slowest_accepted = np.percentile(accepted, 50) if accepted.size else 0.0
    assert np.percentile(shed, 50) < max(slowest_accepted, capacity.percentile(50)), figures
    assert np.percentile(shed, 50) < 200 + 800, figures
    # HTTP: answered with 200, or 503 + Retry-After; never a client-side timeout or a 5xx of another kind
    assert {a[1] for a in http_answers} <= {200, 503}, figures
    assert http_503, f"no HTTP request was refused under {OVERLOAD_FACTOR}x overload: {figures}"
    assert all(a[2] for a in http_503), "a 503 without Retry-After"
    assert recovered_after is not None and recovered_after < 10, figures
