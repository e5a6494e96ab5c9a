"""Raw engine throughput: each served model's ONNX file run directly (no server), per engine and
precision, at batch 1/8/32/64 (images/s, the median of several timed runs after warm-up runs).

Engines are built exactly as the service builds them (serving/engines), with every core of this
process: ONNX Runtime FP32, ONNX Runtime INT8 (the export's `visionzoo quantize` variant, when it
has one), OpenVINO FP32 and INT8, and ONNX Runtime CUDA FP32/FP16 when a GPU works here.

    python -m benchmarks.engines [--models bloodcell] [--batches 1 8 32 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from visionzoo.serving import config
from visionzoo.serving.engines import EngineRequest, EngineUnavailable, build, cuda_usable
from visionzoo.serving.repository import load_served

OUT = Path(__file__).resolve().parent / "out"
BATCHES = (1, 8, 32, 64)


def measure(engine, shape: tuple[int, ...], batch: int, budget_s: float = 1.5, rounds: int = 7) -> float:
    """images/s: the median of up to `rounds` timed runs (fewer when one run costs over the budget)."""
    images = np.random.default_rng(0).uniform(0, 255, (batch, *shape)).astype(np.float32)
    engine.run(images)
    engine.run(images)
    times = []
    started = time.perf_counter()
    while len(times) < rounds and (len(times) < 3 or time.perf_counter() - started < budget_s):
        begin = time.perf_counter()
        engine.run(images)
        times.append(time.perf_counter() - begin)
    return batch / statistics.median(times)


def variants(version) -> list[tuple[str, str, str, Path]]:
    """(label, engine, device, file) to measure for one exported version."""
    found = [("onnxruntime fp32", "onnxruntime", "cpu", version.onnx_path), ("openvino fp32", "openvino", "cpu", version.onnx_path)]
    int8 = version.metadata.get("variants", {}).get("int8")
    if int8:
        path = version.folder / int8["file"]
        found += [("onnxruntime int8", "onnxruntime", "cpu", path), ("openvino int8", "openvino", "cpu", path)]
    if cuda_usable():
        found += [("onnxruntime cuda fp32", "onnxruntime", "cuda", version.onnx_path)]
    return found


def run(models: list[str], batches: tuple[int, ...]) -> dict:
    results = []
    for name in models:
        version = load_served(name)
        (tensor,) = version.inputs
        shape = tuple(tensor["shape"][1:])
        outputs = tuple(o["name"] for o in version.outputs)
        for label, kind, device, path in variants(version):
            precisions = ["fp32", "fp16"] if device == "cuda" else ["fp32"]
            for precision in precisions:
                request = EngineRequest(path, tensor["name"], outputs)
                try:
                    engine = build(kind, request, device, precision, sizes=batches if kind == "openvino" else ())
                except EngineUnavailable as error:
                    results.append({"model": name, "engine": label, "error": str(error)})
                    continue
                row = {"model": name, "version": version.version, "engine": label if precision == "fp32" else label.replace("fp32", precision),
                       "images_per_s": {}}
                for batch in batches:
                    row["images_per_s"][str(batch)] = round(measure(engine, shape, batch), 1)
                engine.close()
                print(json.dumps(row), flush=True)
                results.append(row)
    return {"results": results, "batches": list(batches), "gpu": cuda_usable()}


def test_split_images(version) -> np.ndarray | None:
    """The export's real test split (val where its format has none), decoded as training decodes it,
    from the folder it was trained on or from $VISIONZOO_DATA; None when neither is readable."""
    import os

    config = dict(version.metadata["recipe"]["config"])
    candidates = [Path(config["data_dir"])]
    data = os.environ.get("VISIONZOO_DATA")
    if data:
        candidates.insert(0, Path(data) / Path(config["data_dir"]).name)
    folder = next((c for c in candidates if c.exists()), None)
    if folder is None:
        return None
    from visionzoo.training import train
    from visionzoo.training.recipe import TrainConfig

    prepared = train.prepare(TrainConfig(**{**config, "data_dir": str(folder)}))
    splits = prepared.data.splits
    return (splits["test"] if "test" in splits else splits["val"]).images.astype(np.float32)


TIE_GAP = 1e-5  # top-two scores closer than this are a tie: float32 rounding may decide either way


def top1_agreement(models: list[str]) -> dict:
    """OpenVINO's decisions against ONNX Runtime's (FP32, CPU) on each model's real test split: top-1
    per image (per pixel for segmentation; the 0.5 side for a binary output)."""
    found = {}
    for name in models:
        version = load_served(name)
        images = test_split_images(version)
        if images is None:
            found[name] = {"error": "the export's dataset is not here (set VISIONZOO_DATA)"}
            continue
        (tensor,) = version.inputs
        request = EngineRequest(version.onnx_path, tensor["name"], tuple(o["name"] for o in version.outputs))
        outputs = {}
        for kind in ("onnxruntime", "openvino"):
            engine = build(kind, request, "cpu", "fp32", sizes=(32,) if kind == "openvino" else ())
            chunks = [engine.run(images[start:start + 32]) for start in range(0, len(images), 32)]
            outputs[kind] = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
            engine.close()
        agree, differing, widest = [], 0, 0.0
        for key, reference in outputs["onnxruntime"].items():
            other = outputs["openvino"][key]
            if reference.shape[-1] == 1:
                same, gap = (reference >= 0.5) == (other >= 0.5), 2 * np.abs(reference - 0.5)
            else:
                same = reference.argmax(-1) == other.argmax(-1)
                top2 = np.sort(reference, axis=-1)[..., -2:]
                gap = top2[..., 1] - top2[..., 0]
            agree.append(float(np.mean(same)))
            differing += int(np.count_nonzero(~same))
            widest = max(widest, float(gap[~same].max(initial=0.0)))
        # widest: the largest gap between ONNX Runtime's top two scores where the engines decide differently
        found[name] = {"examples": len(images), "agreement": min(agree), "decisions_differing": differing,
                       "widest_gap_differing": widest}
        print(json.dumps({"model": name, **found[name]}), flush=True)
    return found


def table(found: dict) -> str:
    batches = found["batches"]
    lines = ["| model | engine | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|---|" + "---:|" * len(batches)]
    for row in found["results"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['engine']} | " + " | ".join("—" for _ in batches) + " |")
            continue
        lines.append(f"| {row['model']} | {row['engine']} | " + " | ".join(f"{row['images_per_s'][str(b)]:.0f}" for b in batches) + " |")
    return "\n".join(lines)


def best(found: dict, model: str, engine: str, batch: int) -> float:
    for row in found["results"]:
        if row["model"] == model and row["engine"] == engine and "error" not in row:
            return row["images_per_s"][str(batch)]
    return float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(config.served_models()))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    args = parser.parse_args(argv)
    found = run(args.models, tuple(args.batches))
    found["test_split_top1"] = top1_agreement(args.models)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engines.json").write_text(json.dumps(found, indent=1))
    print(table(found))
    return found


if __name__ == "__main__":
    main()
