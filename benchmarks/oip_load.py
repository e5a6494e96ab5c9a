"""Requests/s of the blood-cell model over OIP gRPC, OIP REST and the BentoML endpoint, at a fixed
number of concurrent clients (closed loop: each client sends its next request when the last one
is answered).

    python -m benchmarks.oip_load                       # starts its own `bentoml serve`
    python -m benchmarks.oip_load --url http://127.0.0.1:3000 --grpc 127.0.0.1:8001   # a running one

Runs, one image per request, each for --duration seconds after --warmup seconds:
- grpc-fp32, http-fp32: tritonclient.grpc.aio / tritonclient.http.aio (binary tensor data), the
  model's FP32 input [1, 96, 96, 3];
- grpc-file, http-file: the same clients sending one JPEG as BYTES `image_bytes` (decoded by the
  server, like an upload);
- bentoml-file: the same JPEG as a multipart upload to POST /bloodcell/predict (aiohttp).
Prints a Markdown table and writes benchmarks/out/oip_load.json. The client runs on the same
machine as the server, so on a small machine it takes CPU from the server: compare rows with each
other, not with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
MODEL = "bloodcell"
RUNS = ("grpc-fp32", "http-fp32", "grpc-file", "http-file", "bentoml-file")


def sample_image(seed: int = 0) -> tuple[np.ndarray, bytes]:
    """One 96x96 RGB image as FP32 pixels and as the JPEG it was decoded from."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)[None]
    return pixels, data


async def closed_loop(call: Callable[[], Awaitable[None]], concurrency: int, warmup: float, duration: float) -> dict:
    """`concurrency` workers calling `call` back to back; latencies of calls that end in the window."""
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)

    async def worker() -> None:
        while True:
            began = time.perf_counter()
            if began >= window[1]:
                return
            try:
                await call()
                failed = None
            except Exception as error:  # noqa: BLE001 - counted and reported
                failed = f"{type(error).__name__}: {error}"[:200]
            ended = time.perf_counter()
            if window[0] <= began and ended <= window[1]:
                (errors.append(failed) if failed else latencies.append(ended - began))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "requests_per_s": len(latencies) / duration,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def batch_histogram(metrics: str) -> tuple[float, float]:
    """(sum, count) of the runtime's bloodcell batch-size histogram."""
    total = count = 0.0
    for line in metrics.splitlines():
        if 'method_name="bloodcell"' in line and 'service_name="visionzoo-runtime"' in line:
            if line.startswith("bentoml_service_adaptive_batch_size_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("bentoml_service_adaptive_batch_size_count"):
                count += float(line.rsplit(" ", 1)[1])
    return total, count


async def run_all(url: str, grpc_address: str, runs: list[str], concurrency: int, warmup: float, duration: float) -> list[dict]:
    pixels, jpeg = sample_image()
    http_address = url.split("://", 1)[-1]
    grpc = grpcclient.InferenceServerClient(grpc_address)
    http = httpclient.InferenceServerClient(http_address, conn_limit=concurrency * 2, conn_timeout=120)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2),
                                    timeout=aiohttp.ClientTimeout(total=120))

    def tensor(module, name: str, array: np.ndarray, datatype: str):
        item = module.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        return item

    files = np.array([jpeg], dtype=np.object_)
    calls = {
        "grpc-fp32": lambda: grpc.infer(MODEL, [tensor(grpcclient, "image", pixels, "FP32")]),
        "http-fp32": lambda: http.infer(MODEL, [tensor(httpclient, "image", pixels, "FP32")]),
        "grpc-file": lambda: grpc.infer(MODEL, [tensor(grpcclient, "image_bytes", files, "BYTES")]),
        "http-file": lambda: http.infer(MODEL, [tensor(httpclient, "image_bytes", files, "BYTES")]),
    }

    async def bentoml_upload() -> None:
        form = aiohttp.FormData()
        form.add_field("images", jpeg, filename="cell.jpg", content_type="image/jpeg")
        async with session.post(f"{url}/bloodcell/predict", data=form) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:120]}")
            await response.read()

    async def check(run: str) -> None:
        if run == "bentoml-file":
            await bentoml_upload()
            return
        result = await calls[run]()
        if result.as_numpy("probabilities").shape != (1, 8):
            raise RuntimeError(f"{run}: unexpected answer {result.get_response()}")

    calls["bentoml-file"] = bentoml_upload
    results = []
    try:
        for run in runs:
            await check(run)
            async with session.get(f"{url}/metrics") as response:
                before = batch_histogram(await response.text())
            found = await closed_loop(calls[run], concurrency, warmup, duration)
            async with session.get(f"{url}/metrics") as response:
                after = batch_histogram(await response.text())
            batches = after[1] - before[1]
            found.update(run=run, concurrency=concurrency, mean_batch=(after[0] - before[0]) / batches if batches else None)
            print(f"{run:13s} {found['requests_per_s']:7.1f} req/s  p50 {found['p50_ms']:6.1f} ms  "
                  f"p99 {found['p99_ms']:6.1f} ms  errors {found['errors']}", flush=True)
            results.append(found)
    finally:
        await grpc.close()
        await http.close()
        await session.close()
    return results


def table(results: list[dict]) -> str:
    lines = ["| run | clients | requests/s | p50 ms | p99 ms | errors | mean runtime batch |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] else "-"
        lines.append(f"| {r['run']} | {r['concurrency']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} | {batch} |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def default_models_dir() -> Path:
    shipped = REPO / "exported_models"
    if any((shipped / "bloodcell_mobilenetv3").glob("*/metadata.json")):
        return shipped  # models missing there are refused; the blood-cell model is all this needs
    from tests.serving.toy_models import models_root

    return models_root()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running server (default: start one)")
    parser.add_argument("--grpc", help="host:port of its OIP gRPC server (with --url)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each run")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    parser.add_argument("--models-dir", type=Path, help="models to serve when starting a server (default: the shipped "
                        "exported_models/ when it holds the blood-cell model, else the test models)")
    parser.add_argument("--out", type=Path, default=OUT / "oip_load.json")
    args = parser.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {RUNS}")
    if bool(args.url) != bool(args.grpc):
        parser.error("--url and --grpc go together")

    with ExitStack() as stack:
        if args.url:
            url, grpc_address, server = args.url.rstrip("/"), args.grpc, "given"
        else:
            from tests.e2e.conftest import bentoml_serve  # the e2e tests' launcher: same settings

            models_dir = args.models_dir or default_models_dir()
            print(f"starting bentoml serve on {models_dir} ...", flush=True)
            served = stack.enter_context(bentoml_serve({"VISIONZOO_WARMUP_BATCH_SIZES": "1,2,4,8,16,32"}, models_dir))
            url, grpc_address, server = served.url, served.grpc_address, f"started on {models_dir} (log: {served.log_path})"
        results = asyncio.run(run_all(url, grpc_address, runs, args.concurrency, args.warmup, args.duration))

    print()
    print(table(results))
    report = {
        "benchmark": "oip_load",
        "model": MODEL,
        "server": server,
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "load_average_1_5_15min": list(os.getloadavg()),
                    "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"concurrency": args.concurrency, "duration_s": args.duration, "warmup_s": args.warmup},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
