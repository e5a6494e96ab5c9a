"""Soak: steady mixed load over all three models and all three protocols for a long time.

    python -m benchmarks.soak --minutes 30        # make soak (SOAK_MINUTES=30)

One real `bentoml serve` (tests/e2e/conftest.py: free ports on 127.0.0.1) takes an open loop at a
moderate rate (--rate requests/s in all, Poisson arrivals) spread over 9 streams: {bloodcell, mura,
mars} x {OIP gRPC, OIP REST, multipart upload to the BentoML endpoint}. Reported:

- RSS of the whole server process tree (arbiter + worker), sampled every 5 s; growth after warm-up
  (the first --warmup-minutes, or 20 % of a short run) against its end (target < 5 %);
- errors by kind (target 0);
- the server's temporary folders (new /tmp entries since the start: the launcher's visionzoo-serve-*
  folder with its metrics and control sockets, prometheus folders) left after a clean SIGTERM
  shutdown (target none).

Writes benchmarks/out/soak.json and prints a summary; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import GrpcTarget, MultipartTarget, RestTarget, answer_outputs, open_loop
from benchmarks.paths import served_export
from benchmarks.service_bench import tree_rss_mib
from tests.e2e.conftest import bentoml_serve

ROUTES = {"bloodcell": "/bloodcell/predict", "mura": "/mura/predict", "mars": "/mars/segment"}  # served name -> endpoint
WEIGHTS = {"bloodcell": 4, "mura": 2, "mars": 1}  # share of the rate (mars is ~20x bloodcell's cost)


def tmp_entries() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir()}


def server_tmp(names: set[str]) -> list[str]:
    """Entries that look like the server's own (the launcher's private folder, prometheus dirs)."""
    return sorted(n for n in names if n.startswith("visionzoo-serve-") or "prometheus" in n.lower())


def targets(served, inputs_outputs: dict[str, tuple[str, list[str], tuple[int, ...]]]) -> list[tuple[str, str, object, float]]:
    """Every model x protocol stream; OIP clients name the answer's outputs (not the Grad-CAM map)."""
    found = []
    total = sum(WEIGHTS.values()) * 3
    for model, route in ROUTES.items():
        input_name, outputs, shape = inputs_outputs[model]
        images = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype(np.float32)
        newest = max((REPO / "exported_models" / served_export(model)).glob("[0-9]*"), key=lambda p: int(p.name))
        golden = sorted((newest / "golden").glob("*.jpg"))[:1]
        files = [(p.name, p.read_bytes()) for p in golden]
        share = WEIGHTS[model] / total
        found.append((model, "grpc", GrpcTarget(served.grpc_address, model, input_name, images, timeout=30, outputs=outputs), share))
        found.append((model, "rest", RestTarget(served.url, model, input_name, images, timeout=30, outputs=outputs), share))
        found.append((model, "multipart", MultipartTarget(served.url, route, files, timeout=30), share))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s over all streams")
    parser.add_argument("--warmup-minutes", type=float, default=None, help="default: 2, or 20%% of a shorter run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "soak.json")
    args = parser.parse_args()
    seconds = args.minutes * 60
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(2.0, 0.2 * args.minutes))

    before_tmp = tmp_entries()
    samples: list[tuple[float, int]] = []
    results = {}
    log_dir = Path(tempfile.mkdtemp(prefix="soak-log-"))
    with bentoml_serve(log_dir=log_dir) as served:
        import httpx

        described = {m: httpx.get(f"{served.url}/v2/models/{m}", timeout=30).json() for m in ROUTES}
        streams = targets(served, {m: (d["inputs"][0]["name"], answer_outputs(d), tuple(d["inputs"][0]["shape"][1:]))
                                   for m, d in described.items()})
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - started, round(tree_rss_mib(served.process.pid) * 2**20)))
                stop.wait(5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        async def run_all():
            return await asyncio.gather(*(open_loop(target, rate=args.rate * share, warmup=0.0, duration=seconds)
                                          for _, _, target, share in streams))

        outcomes = asyncio.run(run_all())
        stop.set()
        sampler.join()
        samples.append((time.monotonic() - started, round(tree_rss_mib(served.process.pid) * 2**20)))
        for (model, protocol, _, _), result in zip(streams, outcomes):
            results[f"{model}/{protocol}"] = result.summary()
        tree = [psutil.Process(served.process.pid), *psutil.Process(served.process.pid).children(recursive=True)]
        server_tmp_live = server_tmp(tmp_entries() - before_tmp)
    _, alive = psutil.wait_procs(tree, timeout=30)
    time.sleep(0.5)
    left = sorted(tmp_entries() - before_tmp - {log_dir.name})
    left_by_server = server_tmp(set(left))

    after_warmup = [rss for t, rss in samples if t >= warmup_s] or [samples[-1][1]]
    rss_start, rss_end = after_warmup[0], samples[-1][1]
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else float("nan")
    errors = sum(r["errors"] for r in results.values())
    requests = sum(r["requests"] for r in results.values())
    report = {
        "minutes": args.minutes, "rate_per_s": args.rate, "warmup_s": warmup_s,
        "requests": requests, "errors": errors,
        "error_kinds": {k: r["error_kinds"] for k, r in results.items() if r["error_kinds"]},
        "rss_mib": {"first": round(samples[0][1] / 2**20, 1), "after_warmup": round(rss_start / 2**20, 1),
                    "end": round(rss_end / 2**20, 1), "max": round(max(s[1] for s in samples) / 2**20, 1)},
        "rss_growth_after_warmup_percent": round(growth, 2),
        "server_tmp_while_running": server_tmp_live,
        "tmp_left_after_shutdown": left, "server_tmp_left_after_shutdown": left_by_server,
        "processes_alive_after_shutdown": [p.pid for p in alive],
        "streams": results,
        "rss_samples": [(round(t, 1), round(rss / 2**20, 1)) for t, rss in samples],
        "log": str(log_dir / "serve.log"),
    }
    passed = growth < 5 and errors == 0 and not left_by_server and not alive
    report["passed"] = passed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"soak {args.minutes:g} min at {args.rate:g} req/s: {requests} answered, {errors} errors {report['error_kinds'] or ''}")
    print(f"  RSS of the server tree: {report['rss_mib']['after_warmup']} MiB after warm-up -> {report['rss_mib']['end']} MiB "
          f"({growth:+.2f} %, target < 5 %)")
    print(f"  temp folders while serving: {server_tmp_live}; left after shutdown: {left_by_server or 'none'}"
          f"{' (other new /tmp entries, not the server: ' + str(left) + ')' if left and not left_by_server else ''}")
    for name, summary in results.items():
        print(f"  {name:<20} {summary['requests']:>6} ok {summary['errors']:>4} err  p50 {summary['p50_ms']:>7} ms  p99 {summary['p99_ms']:>7} ms")
    print(f"  {'PASS' if passed else 'FAIL'} -> {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
