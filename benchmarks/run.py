"""`make bench`: every serving benchmark side by side in one run, into benchmarks/RESULTS.md.

1. benchmarks.engines: the raw engines (ONNX Runtime FP32 and INT8, OpenVINO, CUDA when present)
   on each shipped model at batch 1/8/32/64, and OpenVINO's top-1 against ONNX Runtime's on the
   real test split (when VISIONZOO_DATA is set).
2. benchmarks.service_bench: the service over OIP gRPC, OIP REST and the multipart endpoint at
   1/8/32/64 clients with 1- and 8-image requests; batching on vs off; latency fresh, after a burst
   and after idle; overload shedding; memory and cold start; Seldon MLServer 1.7.1 on the same file.

Then the targets, each a ratio of two numbers measured in this run.

    python -m benchmarks.run [--duration 8] [--skip-mlserver] [--render-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import engines, service_bench

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
OUT = service_bench.OUT


def _grid_row(grid: list[dict], protocol: str, images: int, clients: int, server: str | None = None) -> dict | None:
    for row in grid:
        if (row["protocol"], row["images_per_request"], row["clients"]) == (protocol, images, clients) \
                and row.get("server") == server:
            return row
    return None


def grid_table(grid: list[dict], protocols, server: str | None = None) -> str:
    clients = sorted({row["clients"] for row in grid})
    lines = ["| protocol | images/request | " + " | ".join(f"{c} clients: images/s (p50 / p99 ms)" for c in clients) + " | errors |",
             "|---|---:|" + "---:|" * len(clients) + "---:|"]
    for protocol in protocols:
        for images in service_bench.IMAGES:
            cells, errors = [], 0
            for count in clients:
                row = _grid_row(grid, protocol, images, count, server)
                if row is None:
                    cells.append("—")
                    continue
                errors += row["errors"]
                cells.append(f"{row['images_per_s']:.0f} ({row['p50_ms']:.1f} / {row['p99_ms']:.1f})")
            lines.append(f"| {protocol} | {images} | " + " | ".join(cells) + f" | {errors} |")
    return "\n".join(lines)


def cores(grid: list[dict]) -> str:
    parts = []
    for protocol in service_bench.PROTOCOLS:
        row = _grid_row(grid, protocol, 1, 64)
        if row and "server_cores" in row:
            parts.append(f"{protocol}: server {row['server_cores']:.2f}, load generator {row['client_cores']:.2f}")
    return "; ".join(parts) or "not measured"


def served_engine(service: dict) -> str:
    """The engines-table label of the engine the service chose for the blood-cell model."""
    model = service["models"][service_bench.MODEL]
    kind, device = model.get("engine", "onnxruntime"), model.get("device", "cpu")
    precision = model.get("precision", "fp32")
    return f"{kind} {'cuda ' if device == 'cuda' else ''}{precision}"


def targets(found: dict, raw: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, threshold, met) for every ratio the issue sets."""
    service, grid = found["service"], found["service"]["grid"]
    engine = served_engine(service)
    raw32 = engines.best(raw, service_bench.MODEL, engine, 32)
    raw1 = engines.best(raw, service_bench.MODEL, engine, 1)
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, value: float, threshold: float, higher: bool = True, unit: str = "x") -> None:
        met = value >= threshold if higher else value <= threshold
        rows.append((name, f"{value:.2f}{unit}", f"{'≥' if higher else '≤'} {threshold:g}{unit}", met))

    grpc64 = _grid_row(grid, "grpc", 1, 64)
    add(f"gRPC batch-1 requests at 64 clients / raw {engine} at batch 32", grpc64["images_per_s"] / raw32, 0.8)
    best8 = max(r["images_per_s"] for r in grid if r["protocol"] == "grpc" and r["images_per_request"] == 8)
    add(f"gRPC 8-image requests at saturation / raw {engine} at batch 32", best8 / raw32, 0.9)
    off64 = _grid_row(found["batching_off"]["grid"], "grpc", 1, 64)
    add("batching on / off, gRPC 1-image requests at 64 clients", grpc64["images_per_s"] / off64["images_per_s"], 2.0)
    peer = found.get("mlserver", {})
    if "grid" in peer:
        for images in service_bench.IMAGES:
            for clients in service_bench.CLIENTS:
                ours = _grid_row(grid, "grpc", images, clients)
                theirs = _grid_row(peer["grid"], "grpc", images, clients, "mlserver")
                ratio = ours["images_per_s"] / theirs["images_per_s"]
                p99_ok = ours["p99_ms"] <= theirs["p99_ms"]
                label = (f"vs MLServer {peer['version']}, gRPC, {images}-image requests, {clients} clients: images/s "
                         f"(p99 {ours['p99_ms']:.1f} vs {theirs['p99_ms']:.1f} ms)")
                rows.append((label, f"{ratio:.2f}x", "≥ 2x at equal or lower p99", ratio >= 2 and p99_ok))
    else:
        rows.append(("vs MLServer", "not measured", peer.get("error", "--skip-mlserver"), None))
    hang = service["hangover"]
    add("1-client p50 after a 64-client burst / fresh", hang["after_burst_p50_ms"] / hang["fresh_p50_ms"], 1.2, higher=False)
    engine_ms = 1000.0 / raw1
    for protocol, p50 in service["fresh_p50_ms"].items():
        add(f"1-client p50 over {protocol} − raw batch-1 time ({engine_ms:.2f} ms)", p50 - engine_ms, 2.0, higher=False, unit=" ms")
    multipart32 = _grid_row(grid, "multipart", 1, 32)
    grpc32 = _grid_row(grid, "grpc", 1, 32)
    add("multipart JPEG endpoint / OIP gRPC FP32, 32 clients", multipart32["images_per_s"] / grpc32["images_per_s"], 0.8)
    openvino = engines.best(raw, service_bench.MODEL, "openvino fp32", 32)
    ort = engines.best(raw, service_bench.MODEL, "onnxruntime fp32", 32)
    add("OpenVINO / ONNX Runtime FP32, batch 32 (blood cells)", openvino / ort, 1.6)
    for model, check in raw.get("test_split_top1", {}).items():
        if "agreement" not in check:
            continue
        # a decision may differ only where ONNX Runtime's top two scores are a float32 tie
        differing, widest = check.get("decisions_differing", 0), check.get("widest_gap_differing", 0.0)
        measured = f"{check['agreement']:.7f}" + (f" ({differing} differ, top-2 gap ≤ {widest:.1e})" if differing else "")
        rows.append((f"OpenVINO vs ONNX Runtime top-1 on the {model} test split ({check['examples']} images)",
                     measured, f"= 1.0 but for ties (gap < {engines.TIE_GAP:.0e})", widest < engines.TIE_GAP))
    overload = service["overload"]
    add(f"overload at 4x ({overload['model']}): refusal p50", overload["shed_p50_ms"], 50, higher=False, unit=" ms")
    add(f"overload at 4x ({overload['model']}): accepted p99 / at-capacity p99", overload["accepted_p99_over_capacity_p99"], 2.0,
        higher=False)
    recovered = overload["recovered_after_s"]
    add("overload: 1-client latency back to baseline after the load stops", 99.0 if recovered is None else recovered, 10.0,
        higher=False, unit=" s")
    add("RSS of the whole server after warm-up, three models", service["rss_mib_after_warmup"] / 1024, 1.0, higher=False, unit=" GiB")
    add("ready after start (three models, engine choice cached)", found["starts"]["cached"]["ready_s"], 4.0, higher=False, unit=" s")
    return rows


def transports_section(found: dict | None) -> str:
    if not found:
        return "Not measured in this run."
    unary, stream = found["stream"]["unary_32_clients"], found["stream"]["one_stream"]
    shm = found["shared_memory"]
    message, shared = shm["message"], shm["shared_memory"]
    return (f"One ModelStreamInfer stream (tritonclient's `start_stream`, at most 64 requests unanswered) carrying "
            f"1-image blood-cell requests: {stream['images_per_s']:.0f} images/s (p50 {stream['p50_ms']:.1f} ms, "
            f"{stream['errors']} errors), against {unary['images_per_s']:.0f} images/s for 32 unary clients "
            f"(p50 {unary['p50_ms']:.1f} ms) on the same server.\n\n"
            f"System shared memory (`VISIONZOO_SYSTEM_SHARED_MEMORY=on`), 1 client, {shm['model']} requests of "
            f"{shm['images_per_request']} images ({shm['mib_per_request']:.1f} MiB of FP32): p50 {shared['p50_ms']:.1f} ms with "
            f"the input in a registered region against {message['p50_ms']:.1f} ms with it in the message "
            f"({shared['images_per_s']:.0f} vs {message['images_per_s']:.0f} images/s).")


def render(found: dict, raw: dict, commit: str, when: datetime) -> str:
    service = found["service"]
    settings = found["settings"]
    overload = service["overload"]
    hang = service["hangover"]
    off = found["batching_off"]
    race, cached = found["starts"]["race"], found["starts"]["cached"]
    peer = found.get("mlserver", {})
    target_lines = "\n".join(f"| {name} | {value} | {threshold} | {'met' if met else ('—' if met is None else '**not met**')} |"
                             for name, value, threshold, met in targets(found, raw))
    models = "\n".join(f"| {name} | {m.get('version', '')} | {m.get('engine', '—')} | {m.get('device', '')} | "
                       f"{m.get('precision', '')} | {m.get('chosen_by', m.get('refused', ''))} |"
                       for name, m in service["models"].items())
    mlserver_section = (f"{grid_table(peer['grid'], ['grpc'], 'mlserver')}\n\nMLServer ready after {peer['ready_s']:.1f} s, "
                        f"RSS {peer['rss_mib']:.0f} MiB with the one model."
                        if "grid" in peer else f"Not measured: {peer.get('error', 'skipped (--skip-mlserver)')}.")
    off_rows = "\n".join(f"| {r['images_per_request']} | {r['images_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{_grid_row(service['grid'], 'grpc', r['images_per_request'], 64)['images_per_s']:.0f} |"
                         for r in off["grid"])
    gpu = "" if raw.get("gpu") else ("\nNo GPU on this machine and none lent to this run: no CUDA figures (none are "
                                     "guessed). On a GPU `make bench` adds ONNX Runtime CUDA FP32/FP16 rows.\n")
    return f"""# Benchmark results

Generated by `make bench` (`python -m benchmarks.run --duration {settings['duration_s']:g}`) at commit `{commit}`
on {when:%Y-%m-%d %H:%M} UTC; {settings['cpus']} CPUs, load average before
{', '.join(f'{v:.1f}' for v in settings['load_average_before'])}. Closed-loop clients run on the same
machine as the server (they take CPU from it); requests carry the blood-cell model's real golden
JPEGs (multipart) or the same images as the model's FP32 input tensor (OIP). Compare rows of one run
with each other; absolute numbers depend on the machine and its load.

## Targets

| target | measured | aim | |
|---|---:|---:|---|
{target_lines}

## Raw engines (images/s, no server)

Each shipped model's ONNX file run by the engines exactly as the service builds them.
{gpu}
{engines.table(raw)}

## The service: what it chose

Process start to ready, three models: {race['ready_s']:.1f} s when the engines race (a new machine, new
model files, or a container whose home is not writable), {cached['ready_s']:.1f} s when their choice is cached
(every later start); OpenVINO's static-shape copies then compile in the background, done
{race['settled_s']:.1f} s / {cached['settled_s']:.1f} s after start (the dynamic-shape model answers until then).
RSS of every server process: {service['rss_mib_after_warmup']:.0f} MiB after warm-up, {service['rss_mib_after_load']:.0f} MiB after all the load below.
The benchmark's own server below started in {service['ready_s']:.1f} s (the second, batching off: {off['ready_s']:.1f} s).

| model | version | engine | device | precision | chosen by |
|---|---|---|---|---|---|
{models}

## The service under load (blood-cell model)

`grpc`: OIP ModelInfer (grpc.aio, tritonclient's protobufs); `rest`: OIP REST with binary tensor data;
`multipart`: `POST /bloodcell/predict` with JPEG files (the server decodes them). errors: requests
refused with 503 / UNAVAILABLE (queue full or queue timeout) — the designed answer to more load than
the cores carry.

{grid_table(service['grid'], service_bench.PROTOCOLS)}

Where the two cores went at 64 clients, 1-image requests (CPU seconds per second): {cores(service['grid'])}.
The raw engine figures have both cores to themselves; in the server the engine shares them with the
request path (protocol parsing, the event loop, answers) and with the load generator.

## Batching on vs off (gRPC, 64 clients)

| images/request | off: images/s | p50 ms | p99 ms | on: images/s |
|---:|---:|---:|---:|---:|
{off_rows}

## Latency after a burst

1-client gRPC p50: fresh {hang['fresh_p50_ms']:.2f} ms; right after 8 s of 64 clients ({hang['burst_images_per_s']:.0f} images/s)
{hang['after_burst_p50_ms']:.2f} ms; after 20 s idle {hang['after_idle_p50_ms']:.2f} ms.

## Other gRPC transports

{transports_section(service.get('transports'))}

## Overload

On the {overload['model']} model (at 4x the blood-cell model's rate the load generator, on the same cores,
saturates before the server does), 1-image gRPC requests. Capacity ({overload.get('capacity_clients', 16)} closed-loop clients, at most the model's queue):
{overload['capacity_requests_per_s']:.0f} requests/s. Open loop (Poisson arrivals) at that
rate: p99 {overload['at_capacity']['p99_ms']:.1f} ms, {overload['at_capacity']['errors']} refused. At 4x ({overload['offered_per_s']:.0f}/s offered):
{overload['at_4x']['requests_per_s']:.0f}/s answered, {100 * overload['shed_fraction']:.0f}% refused with UNAVAILABLE in
p50 {overload['shed_p50_ms']:.1f} / p99 {overload['shed_p99_ms']:.1f} ms; accepted p99 {overload['at_4x']['p99_ms']:.1f} ms
({overload['accepted_p99_over_capacity_p99']:.2f}x the at-capacity p99); 1-client latency back to baseline
{'after ' + format(overload['recovered_after_s'], '.1f') + ' s' if overload['recovered_after_s'] is not None else 'not within 30 s'}.

## Seldon MLServer on the same ONNX file (gRPC, same load generator)

{mlserver_section}
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per load point (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point (default 2)")
    parser.add_argument("--skip-mlserver", action="store_true", help="skip the MLServer peer (it needs its own venv)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite RESULTS.md from the last run's benchmarks/out/*.json without measuring")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    when = datetime.now(UTC)
    if args.render_only:
        raw = json.loads((OUT / "engines.json").read_text())
        found = json.loads((OUT / "service_bench.json").read_text())
        commit = found.get("commit", commit)
        when = datetime.fromtimestamp((OUT / "service_bench.json").stat().st_mtime, UTC)
    else:
        raw = engines.main([])
        found = service_bench.main(["--duration", str(args.duration), "--warmup", str(args.warmup)]
                                   + (["--skip-mlserver"] if args.skip_mlserver else []))
        found["commit"] = commit
        (OUT / "service_bench.json").write_text(json.dumps(found, indent=1))
    RESULTS.write_text(render(found, raw, commit, when))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
