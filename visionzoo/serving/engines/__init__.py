"""Inference engines behind one small interface (`Engine.run(batch) -> outputs by name`).

| engine | device | precision | when `VISIONZOO_ENGINE=auto` picks it |
|---|---|---|---|
| `onnxruntime` | cuda | fp32, fp16 | a working NVIDIA GPU (the CUDA provider starts and really runs the model) |
| `onnxruntime` | cpu | fp32 (and int8 exports) | no GPU, and it was faster than OpenVINO on this CPU for this model |
| `openvino` | cpu | fp32 (and int8 exports) | no GPU, and it was faster than ONNX Runtime on this CPU for this model |

How `auto` decides on a CPU: both engines load the model and run every warm-up batch size (batch 1
and the largest batch), then each runs every size twice more, timed; the engine with the lower
time per image, summed over the sizes, serves, and the other is released. OpenVINO must be at
least OPENVINO_MARGIN faster to win: it holds a compiled copy per static batch size, about 75 MiB
more than ONNX Runtime for the X-ray model, which a near tie does not pay for. The result is kept in
a small cache file (VISIONZOO_ENGINE_CACHE, default ~/.cache/visionzoo/engine-choice.json) keyed by
the model file's sha256, the CPU model and its vector extensions, the thread count and both
engines' versions, so later starts on the same kind of machine skip the race (also `visionzoo
predict`, which warms only the sizes its own call needs: races time the server's). `/models` shows the
choice, the times and whether they came from the cache. Measured here (AMD EPYC, AVX2, 2 cores):
OpenVINO wins the blood-cell model, ONNX Runtime the X-ray model, and the two are within a few per
cent on the Mars segmenter.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..repository import sha256
from .base import Engine, EngineRequest, EngineUnavailable
from .onnxruntime import OnnxRuntimeEngine, cuda_usable

logger = logging.getLogger("visionzoo.engines")

ENGINES = ("auto", "onnxruntime", "openvino")
CPU_ENGINES = ("onnxruntime", "openvino")
TIMED_RUNS = 2
OPENVINO_MARGIN = 0.05  # how much faster than ONNX Runtime OpenVINO must be to serve (it takes more memory)


def build(kind: str, request: EngineRequest, device: str = "cpu", precision: str = "fp32",
          sizes: Sequence[int] = (), defer: bool = False) -> Engine:
    """One engine of `kind` ("onnxruntime" or "openvino") on `device`; with `defer`, work that can
    wait (OpenVINO's static shapes for `sizes`) waits for `Engine.finish_loading`."""
    if kind == "onnxruntime":
        return OnnxRuntimeEngine(request, device, precision)
    if kind == "openvino":
        if device != "cpu":
            raise EngineUnavailable("openvino runs on the CPU here; use onnxruntime for CUDA")
        from .openvino import OpenVINOEngine

        return OpenVINOEngine(request, static_sizes=sizes, defer_static=defer)
    raise EngineUnavailable(f"unknown engine {kind!r}; expected one of {', '.join(ENGINES)}")


def warm_up(engine: Engine, sample: Callable[[int], np.ndarray], sizes: Sequence[int]) -> float:
    """Run each size once (kernel selection, arena growth) that the engine wants warmed now; returns
    the seconds it took."""
    started = time.perf_counter()
    for size in engine.sizes_to_warm(sizes):
        engine.run(sample(size))
    return time.perf_counter() - started


def seconds_per_image(engine: Engine, sample: Callable[[int], np.ndarray], sizes: Sequence[int]) -> float:
    """The race's score: per-image time at each size (the better of TIMED_RUNS runs), summed."""
    total = 0.0
    for size in sizes:
        batch = sample(size)
        best = float("inf")
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            engine.run(batch)
            best = min(best, time.perf_counter() - started)
        total += best / size
    return total


# ---- the cache of race results --------------------------------------------------------------------

def cpu_identity() -> str:
    """The CPU model and the vector extensions engines choose kernels by."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "fma", "asimd", "sve")
    return f"{model} [{' '.join(f for f in wanted if f in flags)}]"


def _versions() -> str:
    from importlib import metadata

    found = []
    for package in ("onnxruntime-gpu", "onnxruntime", "openvino"):
        try:
            found.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ",".join(found)


def cache_path() -> Path | None:
    value = os.environ.get("VISIONZOO_ENGINE_CACHE", "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "visionzoo" / "engine-choice.json"


def cache_key(request: EngineRequest, sizes: Sequence[int]) -> str:
    digest = request.sha256 or sha256(request.onnx_path)
    threads = request.threads or len(os.sched_getaffinity(0))
    return f"{digest}|{cpu_identity()}|threads={threads}|sizes={','.join(map(str, sizes))}|{_versions()}"


def _read_cache(path: Path | None) -> dict[str, dict]:
    """The race records in the cache file; anything else there (a damaged or foreign file) counts as
    no record, so the engines race again and the next write replaces it."""
    if path is None:
        return {}
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {key: entry for key, entry in found.items() if isinstance(entry, dict)}


def _write_cache(path: Path | None, key: str, entry: dict) -> None:
    """Add `entry` under `key`, atomically (a temporary file renamed over the old one, removed when
    anything fails); a cache that cannot be written only means racing again next time."""
    if path is None:
        return
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        found = {**_read_cache(path), key: entry}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            temporary = handle.name
            json.dump(found, handle, indent=1)
        os.replace(temporary, path)
        temporary = None
    except OSError as error:  # a read-only home (containers), a full disk
        logger.debug("cannot write the engine cache %s: %s", path, error)
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


# ---- choosing ------------------------------------------------------------------------------------

def needs_race(request: EngineRequest, kind: str, device: str, race_sizes: Sequence[int]) -> bool:
    """Whether `choose` will time both engines (so the caller can keep other work off the CPU)."""
    if kind != "auto" or device == "cuda" or (device == "auto" and cuda_usable()):
        return False
    entry = _read_cache(cache_path()).get(cache_key(request, race_sizes))
    return not (entry and entry.get("engine") in CPU_ENGINES)


def choose(request: EngineRequest, kind: str, device: str, precision: str,
           sample: Callable[[int], np.ndarray], sizes: Sequence[int], defer: bool = False,
           race_sizes: Sequence[int] | None = None) -> tuple[Engine, dict]:
    """The engine to serve with, warmed up at `sizes`, and how it was chosen (for /models and the log).

    `kind`: auto | onnxruntime | openvino; `device`: auto | cuda | cpu; `sample(n)` gives an input
    batch of n items. `defer`: leave what can wait to `Engine.finish_loading` (a race never defers:
    it times each engine as it will serve). `race_sizes` (default `sizes`): the batch sizes a race
    times and files its result under; a caller that warms fewer sizes than the server would (one
    image on the command line) passes the server's, so it reads and writes the server's record.
    """
    race_sizes = tuple(race_sizes or sizes)
    unraced = [size for size in sizes if size not in race_sizes]  # warmed after a race, on the engine that serves
    if device not in ("auto", "cuda", "cpu"):
        raise EngineUnavailable(f"device must be auto, cuda or cpu, got {device!r}")
    if device == "cuda" or (device == "auto" and kind in ("auto", "onnxruntime") and cuda_usable()):
        engine = build("onnxruntime", request, "cuda", precision if precision in ("fp32", "fp16") else "fp32")
        warm_up(engine, sample, sizes)
        return engine, {"chosen_by": "a GPU is present" if device == "auto" else "VISIONZOO_DEVICE=cuda"}
    if kind != "auto":
        engine = build(kind, request, "cpu", sizes=sizes, defer=defer)
        warm_up(engine, sample, sizes)
        return engine, {"chosen_by": f"VISIONZOO_ENGINE={kind}"}
    path = cache_path()
    key = cache_key(request, race_sizes)
    cached = _read_cache(path).get(key)
    if cached and cached.get("engine") in CPU_ENGINES:
        try:
            engine = build(cached["engine"], request, "cpu", sizes=sizes, defer=defer)
            warm_up(engine, sample, sizes)
            return engine, {"chosen_by": "the faster on this CPU (cached race)", "race_us_per_image": cached.get("race_us_per_image")}
        except EngineUnavailable:
            pass  # the cached engine no longer loads here: race again
    candidates, failures = [], {}
    for name in CPU_ENGINES:
        try:
            engine = build(name, request, "cpu", sizes=race_sizes)
            warm_up(engine, sample, race_sizes)
            candidates.append(engine)
        except EngineUnavailable as error:
            failures[name] = str(error)
        except Exception as error:  # noqa: BLE001 - an engine that crashes on this model loses the race; the other serves
            logger.warning("%s failed on %s: %s: %s", name, request.onnx_path.name, type(error).__name__, error)
            failures[name] = f"{name} failed on this model ({type(error).__name__}: {error})"
    if not candidates:
        raise EngineUnavailable("; ".join(failures.values()))
    if len(candidates) == 1:
        warm_up(candidates[0], sample, unraced)
        return candidates[0], {"chosen_by": "the only engine that loads here", "unavailable": failures}
    scores = {engine.kind: seconds_per_image(engine, sample, race_sizes) for engine in candidates}
    handicap = {"openvino": 1 / (1 - OPENVINO_MARGIN)}
    winner = min(candidates, key=lambda engine: scores[engine.kind] * handicap.get(engine.kind, 1.0))
    for engine in candidates:
        if engine is not winner:
            engine.close()
    warm_up(winner, sample, unraced)
    race = {name: round(value * 1e6, 1) for name, value in scores.items()}
    _write_cache(path, key, {"engine": winner.kind, "race_us_per_image": race, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return winner, {"chosen_by": "the faster on this CPU (race at start-up)", "race_us_per_image": race}


__all__ = ["ENGINES", "Engine", "EngineRequest", "EngineUnavailable", "build", "choose", "cuda_usable", "needs_race", "warm_up"]
