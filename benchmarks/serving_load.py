"""Adaptive batching on vs off, side by side in one run: the blood-cell endpoint
(POST /bloodcell/predict, one real JPEG per request) at 1 and 32 concurrent clients.

    python -m benchmarks.serving_load [--duration 20] [--warmup 5]

Starts `bentoml serve` twice on the shipped models (VISIONZOO_BATCHING=on, then off), runs a
closed-loop load (each client sends its next request when the last is answered), and reports
requests/s, p50 and p99 latency per setting plus the on/off ratios. Prints a Markdown table and
writes benchmarks/out/serving_load.json. Client and server share the machine: compare rows with
each other, not with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
from pathlib import Path

import aiohttp

from benchmarks.oip_load import OUT, closed_loop
from tests.e2e.conftest import bentoml_serve

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 32)


def golden_image() -> tuple[str, bytes]:
    folder = max((REPO / "exported_models" / "bloodcell_mobilenetv3").glob("[0-9]*"), key=lambda p: int(p.name))
    name = json.loads((folder / "metadata.json").read_text())["golden"]["files"][0]
    return name, (folder / "golden" / name).read_bytes()


async def measure(url: str, concurrency: int, warmup: float, duration: float) -> dict:
    name, data = golden_image()
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def call() -> None:
            form = aiohttp.FormData()
            form.add_field("images", data, filename=name, content_type="image/jpeg")
            async with session.post("/bloodcell/predict", data=form) as response:
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
                await response.read()

        return await closed_loop(call, concurrency, warmup, duration)


def server_memory_mib(pid: int) -> float:
    """Resident memory of a server and all its processes (arbiter, entry and runtime workers)."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def run(warmup: float, duration: float) -> dict:
    results = {}
    for batching in ("on", "off"):
        with bentoml_serve({"VISIONZOO_BATCHING": batching}, models_dir=REPO / "exported_models") as served:
            for concurrency in CONCURRENCY:
                results[f"batching {batching}, {concurrency} clients"] = {
                    "batching": batching, "concurrency": concurrency,
                    **asyncio.run(measure(served.url, concurrency, warmup, duration)),
                    "server_memory_mib": server_memory_mib(served.process.pid),
                }
    on, off = (results[f"batching {b}, 32 clients"] for b in ("on", "off"))
    import os

    return {
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version(),
                    "load_average_1_5_15min": list(os.getloadavg())},
        "runs": results,
        "ratios_at_32_clients": {
            "throughput_on_over_off": on["requests_per_s"] / off["requests_per_s"],
            "p99_on_over_off": on["p99_ms"] / off["p99_ms"],
        },
    }


def table(report: dict) -> str:
    lines = ["| setting | requests/s | p50 ms | p99 ms | errors | server memory MiB |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in report["runs"].items():
        lines.append(f"| {name} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} "
                     f"| {row['server_memory_mib']:.0f} |")
    ratios = report["ratios_at_32_clients"]
    lines.append("")
    lines.append(f"At 32 clients, batching on / off: throughput x{ratios['throughput_on_over_off']:.2f}, "
                 f"p99 x{ratios['p99_on_over_off']:.2f}.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per setting (default 20)")
    args = parser.parse_args(argv)
    report = run(args.warmup, args.duration)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serving_load.json").write_text(json.dumps(report, indent=2))
    print(table(report))
    return report


if __name__ == "__main__":
    main()
