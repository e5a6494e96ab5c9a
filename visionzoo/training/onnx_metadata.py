"""ONNX files that describe themselves: labels, preprocessing, task and provenance as
`metadata_props`, and a batch dimension named `batch`, so a model.onnx handed on without its
metadata.json still says what it computes (Netron, `onnx.load(...).metadata_props`, any runtime).

    annotate(onnx_path, metadata)       what export and quantize call (onnx only, no TensorFlow)
    python -m visionzoo.training.onnx_metadata --upgrade exported_models/<name>/<version> ...

Keys (string values; JSON where the value is structured): labels, preprocessing, task, model_name,
version, data_source, dataset, git_commit, recipe, and where they apply learnable_classes,
decision_weights and explain. Only the model's metadata and dim_param names
change: the graph, its weights and so its outputs stay as they were.

`--upgrade` brings an export written before these conventions up to them in place: annotates
model.onnx and its variants, moves `saved_model/*` up into the version folder (the layout TensorFlow
Serving loads: `<base>/<name>/<version>/saved_model.pb` + `variables/`), checks the ONNX outputs are
bit-identical on a fixed input, and rewrites metadata.json's file hashes (atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

BATCH_DIM = "batch"
LEGACY_SAVED_MODEL = "saved_model"  # exports before the TF Serving layout kept the SavedModel here
# What tf.saved_model.save writes into its folder.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "fingerprint.pb", "variables", "assets")


def properties(metadata: dict) -> dict[str, str]:
    """The metadata_props for an export's metadata.json document (absent facts are left out)."""
    provenance = metadata.get("provenance", {})
    data = metadata.get("data", {})
    found = {
        "labels": json.dumps(metadata.get("labels", {}), sort_keys=True),
        "preprocessing": json.dumps(metadata.get("preprocessing", {}), sort_keys=True),
        "task": metadata.get("task"),
        "model_name": metadata.get("name"),
        "version": metadata.get("version"),
        "data_source": data.get("source"),
        "dataset": json.dumps(data["dataset"], sort_keys=True) if data.get("dataset") else None,
        "git_commit": provenance.get("git_commit"),
        "recipe": metadata.get("recipe", {}).get("name"),
        "learnable_classes": json.dumps(metadata["learnable_classes"]) if metadata.get("learnable_classes") else None,
        "decision_weights": json.dumps(metadata["decision_weights"]) if metadata.get("decision_weights") else None,
        "explain": json.dumps(metadata["explain"], sort_keys=True) if metadata.get("explain") else None,
    }
    return {key: str(value) for key, value in found.items() if value is not None}


def name_batch_dimension(graph) -> None:
    """Name the first dimension of every graph input and output `batch` (tf2onnx writes `unk__N`),
    and every other use of those names (value_info of quantized graphs) with it."""
    renamed = set()
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            continue  # a scalar or a fixed batch: nothing to name
        if dims[0].dim_param:
            renamed.add(dims[0].dim_param)
        dims[0].dim_param = BATCH_DIM
    for value in graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renamed:
                dim.dim_param = BATCH_DIM


def share_transposed_weights(path: Path, min_elements: int = 1 << 16) -> list[str]:
    """Replace every large 2-D initializer that is the transpose of another by a Transpose node of
    that one; returns the names replaced. tf2onnx folds the transposed kernel that a gradient's
    MatMul reads (a Grad-CAM output) into a second copy of the weights: for the X-ray model's
    100,352 x 128 dense kernel that doubled model.onnx to 98 MiB. ONNX Runtime and OpenVINO fold the
    Transpose back into a constant when they load the model, so outputs and speed are unchanged."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    large = {init.name: numpy_helper.to_array(init) for init in graph.initializer
             if len(init.dims) == 2 and int(np.prod(init.dims)) >= min_elements}
    replaced = {}
    folded_first = sorted(large, key=lambda name: not name.startswith("const_fold"))  # keep the model's own kernel
    for name in folded_first:
        array = large[name]
        if name in replaced:
            continue
        for other, candidate in large.items():
            if other != name and other not in replaced and name not in replaced.values() and \
                    candidate.shape == array.shape[::-1] and np.array_equal(candidate, array.T):
                replaced[name] = other  # `name` becomes Transpose(other)
                break
    if not replaced:
        return []
    kept = [init for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for index, (name, source) in enumerate(replaced.items()):
        graph.node.insert(index, helper.make_node("Transpose", [source], [name], perm=[1, 0], name=f"{name}/shared_transpose"))
    temporary = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(temporary))
    onnx.checker.check_model(str(temporary))
    os.replace(temporary, path)
    return list(replaced)


def order_outputs(graph, names: list[str]) -> None:
    """List the graph's outputs in metadata.json's order (tf2onnx sorts them by name: `cam` would
    come before `probabilities`); outputs not named stay last, in their order."""
    rank = {name: index for index, name in enumerate(names)}
    ordered = sorted(graph.output, key=lambda value: rank.get(value.name, len(rank)))
    if [value.name for value in ordered] != [value.name for value in graph.output]:
        copies = [type(value)() for value in ordered]
        for copy, value in zip(copies, ordered):
            copy.CopyFrom(value)
        del graph.output[:]
        graph.output.extend(copies)


def annotate(onnx_path: Path, metadata: dict) -> None:
    """Write `properties(metadata)` into the ONNX file's metadata_props (replacing earlier values
    of those keys, keeping others), name its batch dimension and list its outputs in metadata.json's
    order; atomic (temporary file + rename)."""
    import onnx

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    wanted = properties(metadata)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in wanted]
    del model.metadata_props[:]
    for key, value in [*kept, *sorted(wanted.items())]:
        model.metadata_props.add(key=key, value=value)
    if str(metadata.get("version", "")).isdigit():
        model.model_version = int(metadata["version"])
    if metadata.get("description"):
        model.doc_string = metadata["description"]
    name_batch_dimension(model.graph)
    order_outputs(model.graph, [output["name"] for output in metadata.get("outputs", [])])
    temporary = onnx_path.with_name(f".{onnx_path.name}.tmp")
    onnx.save(model, str(temporary))
    onnx.checker.check_model(str(temporary))
    os.replace(temporary, onnx_path)


def read_properties(onnx_path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


def onnx_files(metadata: dict) -> list[str]:
    """model.onnx and the variant files an export's metadata.json lists."""
    return ["model.onnx", *[variant["file"] for variant in metadata.get("variants", {}).values()]]


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _outputs(onnx_path: Path, metadata: dict) -> list:
    """The file's outputs on a fixed pseudo-random batch of two (to prove annotation changed nothing)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for tensor in session.get_inputs():
        shape = [2, *[int(d) for d in tensor.shape[1:]]]
        if "float" in tensor.type:
            feed[tensor.name] = rng.uniform(0, 255, size=shape).astype(np.float32)
        else:
            feed[tensor.name] = rng.integers(0, 2, size=shape).astype(np.int64 if "int64" in tensor.type else np.int32)
    return dict(zip([output.name for output in session.get_outputs()], session.run(None, feed)))


def upgrade(folder: Path) -> dict[str, tuple[str | None, str]]:
    """Bring one export folder up to the current layout in place (see the module docstring).

    Returns {file: (old sha256 or None, new sha256)} for every file whose hash changed or moved.
    """
    import numpy as np

    from .export import saved_model_note
    from .runs import write_json

    folder = Path(folder)
    metadata_path = folder / "metadata.json"
    document = json.loads(metadata_path.read_text())
    before = dict(document.get("files", {}))

    legacy = folder / LEGACY_SAVED_MODEL
    if legacy.is_dir():
        clashes = [entry.name for entry in legacy.iterdir() if (folder / entry.name).exists()]
        if clashes:
            raise FileExistsError(f"{folder}: cannot move {LEGACY_SAVED_MODEL}/ up, {clashes} already exist there")
        for entry in legacy.iterdir():
            shutil.move(str(entry), str(folder / entry.name))
        legacy.rmdir()
    note = re.search(r"not shipped \((\d+) MiB\)", document.get("saved_model") or "")
    if note:  # say how to regenerate it, with the run folder when runs/ holds exactly one of this model
        if not document.get("run"):
            candidates = sorted((folder.resolve().parents[2] / "runs").glob(f"{document['name']}-*"))
            if len(candidates) == 1:
                document["run"] = f"runs/{candidates[0].name}"
        document["saved_model"] = saved_model_note(int(note.group(1)) * 2**20, document.get("run"))

    for name in onnx_files(document):
        path = folder / name
        expected = _outputs(path, document)
        annotate(path, document)
        found = _outputs(path, document)
        if set(found) != set(expected) or any(not np.array_equal(expected[name], found[name]) for name in expected):
            raise RuntimeError(f"{path}: outputs changed by annotation; restore the file from git")

    renamed = {(key[len(LEGACY_SAVED_MODEL) + 1:] if key.startswith(f"{LEGACY_SAVED_MODEL}/") else key): key for key in before}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "metadata.json"}
    if present != set(renamed):
        raise RuntimeError(f"{folder}: files {sorted(present ^ set(renamed))} differ from metadata.json's record")
    document["files"] = {key: _sha256(folder / key) for key in sorted(renamed)}
    write_json(metadata_path, document)
    return {key: (before.get(old), document["files"][key]) for key, old in renamed.items()
            if key != old or before.get(old) != document["files"][key]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upgrade", nargs="+", type=Path, required=True, metavar="VERSION_FOLDER",
                        help="export version folders to upgrade in place, e.g. exported_models/mars_dual_unet/1")
    args = parser.parse_args(argv)
    for folder in args.upgrade:
        for name, (old, new) in upgrade(folder).items():
            print(f"{folder}/{name}: {old[:12] if old else '-'} -> {new[:12]}")


if __name__ == "__main__":
    main()
