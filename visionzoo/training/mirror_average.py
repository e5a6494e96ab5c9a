"""Test-time mirror averaging, written into an ONNX graph.

The wrapped graph takes the same input as the source (an NHWC batch) and gives the same outputs,
but inside it the model sees each image and its left-right mirror in one batch of 2N, and every
output is the mean of the two answers. Outputs that are maps of the image (a segmentation map, the
Grad-CAM `cam`) are mirrored back before the mean, so they still line up with the image sent; a map
scaled to a peak of 1 (the Grad-CAM map) is scaled to 1 again after the mean. The result answers a mirrored image exactly as it answers the original (its maps mirrored).

Serving needs no special case: the file is an ordinary ONNX model with the source's input and
output names, shapes and types; it costs two forward passes per image.

    wrapped = wrap(onnx.load("model.onnx"), {"probabilities": None, "cam": 2}, peak_normalized={"cam"})

This module needs only `onnx` (no TensorFlow); `visionzoo revise --mirror-average` publishes a
wrapped version and measures it (benchmarks/bloodcell_tta.py chose the mirror on validation).
"""

from __future__ import annotations

import numpy as np

IMAGE_WIDTH_AXIS = 2  # NHWC
VIEWS = ("image", "left-right mirror")
_BEFORE = "mirror_average/"


def width_axes(metadata: dict) -> dict[str, int | None]:
    """Per output of an export's metadata.json: the axis along which the output mirrors with the
    image (2 for the maps: (N, H, W, C) segmentation probabilities and the (N, h, w) Grad-CAM map),
    None for answers about the whole image (class probabilities, scores)."""
    explained = (metadata.get("explain") or {}).get("tensor")
    axes = {}
    for output in metadata["outputs"]:
        is_map = metadata.get("task") == "segmentation" or output["name"] == explained
        axes[output["name"]] = IMAGE_WIDTH_AXIS if is_map and len(output["shape"]) >= 3 else None
    return axes


def peak_normalized(metadata: dict) -> set[str]:
    """Outputs scaled so each image's map peaks at 1 (the Grad-CAM map: gradcam.py divides by its maximum)."""
    explained = (metadata.get("explain") or {}).get("tensor")
    return {output["name"] for output in metadata["outputs"] if output["name"] == explained}


def _opset(model) -> int:
    return max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)


def wrap(model, axes: dict[str, int | None], peak_normalized: set[str] = frozenset()):
    """A copy of `model` that averages each output over the image and its mirror.

    `axes`: every graph output's name -> the axis its map mirrors along, or None (see width_axes).
    `peak_normalized`: outputs whose mean is divided by its per-image maximum (over all but the batch axis).
    The model must take one NHWC image input with a free batch dimension; opset 13 or later."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    opset = _opset(model)
    if opset < 13:
        raise ValueError(f"mirror averaging needs ONNX opset 13 or later (Split/Slice with tensor inputs); this model has {opset}")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    initializer_names = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializer_names]
    if len(inputs) != 1:
        raise ValueError(f"mirror averaging takes a one-input model, this one has {[v.name for v in inputs]}")
    image = inputs[0].name
    outputs = [value.name for value in graph.output]
    if sorted(outputs) != sorted(axes):
        raise ValueError(f"axes must name every output: the graph has {outputs}, axes name {sorted(axes)}")
    if not set(peak_normalized) <= set(outputs):
        raise ValueError(f"peak_normalized names {sorted(set(peak_normalized) - set(outputs))}, not outputs of the graph")
    if any(node.name.startswith(_BEFORE) for node in graph.node):
        raise ValueError("this graph already averages over mirrors")

    # The source graph now reads the 2N batch and writes its outputs under new names.
    views, renamed = _BEFORE + "views", {name: f"{_BEFORE}{name}" for name in outputs}
    for node in graph.node:
        node.input[:] = [views if name == image else renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = renamed.get(value.name, value.name)

    def constant(name: str, values) -> str:
        if _BEFORE + name not in {init.name for init in graph.initializer}:
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), _BEFORE + name))
        return _BEFORE + name

    flip = {"starts": constant("flip_starts", [-1]), "ends": constant("flip_ends", [np.iinfo(np.int64).min]),
            "steps": constant("flip_steps", [-1])}

    def mirror(source: str, target: str, axis: int) -> onnx.NodeProto:
        axis_name = constant(f"axis_{axis}", [axis])
        return helper.make_node("Slice", [source, flip["starts"], flip["ends"], axis_name, flip["steps"]], [target],
                                name=f"{_BEFORE}mirror_{target.removeprefix(_BEFORE)}")

    before = [mirror(image, _BEFORE + "mirrored", IMAGE_WIDTH_AXIS),
              helper.make_node("Concat", [image, _BEFORE + "mirrored"], [views], axis=0, name=_BEFORE + "concat")]
    half = _BEFORE + "half"
    graph.initializer.append(numpy_helper.from_array(np.asarray(0.5, np.float32), half))
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in graph.output}
    after = []
    for name in outputs:
        plain, seen = f"{_BEFORE}{name}/plain", f"{_BEFORE}{name}/mirror"
        split = {"num_outputs": 2} if opset >= 18 else {}
        after.append(helper.make_node("Split", [renamed[name]], [plain, seen], axis=0, name=f"{_BEFORE}split_{name}", **split))
        if axes[name] is not None:
            after.append(mirror(seen, f"{seen}_back", axes[name]))
            seen = f"{seen}_back"
        after.append(helper.make_node("Add", [plain, seen], [f"{_BEFORE}{name}/sum"], name=f"{_BEFORE}add_{name}"))
        if name not in peak_normalized:
            after.append(helper.make_node("Mul", [f"{_BEFORE}{name}/sum", half], [name], name=f"{_BEFORE}mean_{name}"))
            continue
        # the mean's scale does not matter once divided by the peak: sum / max(peak of sum, tiny)
        after.extend(scale_to_peak(graph, f"{_BEFORE}{name}/sum", name, ranks[name], opset, _BEFORE))
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ValueError(f"output {value.name} is not float32; only float outputs can be averaged")
    return wrapped


def scale_to_peak(graph, source: str, target: str, rank: int, opset: int, prefix: str) -> list:
    """Nodes writing `target` = `source` / max(its per-image maximum, 1e-12) (all axes but the batch
    axis); their constants are added to `graph`'s initializers under `prefix`."""
    from onnx import helper, numpy_helper

    peak, tiny = f"{prefix}{target}/peak", f"{prefix}{target}/tiny"
    graph.initializer.append(numpy_helper.from_array(np.asarray(1e-12, np.float32), tiny))
    spatial = list(range(1, rank))
    if opset >= 18:
        axes = f"{prefix}{target}/axes"
        graph.initializer.append(numpy_helper.from_array(np.asarray(spatial, np.int64), axes))
        reduce = helper.make_node("ReduceMax", [source, axes], [peak], keepdims=1, name=f"{prefix}peak_{target}")
    else:
        reduce = helper.make_node("ReduceMax", [source], [peak], axes=spatial, keepdims=1, name=f"{prefix}peak_{target}")
    return [reduce, helper.make_node("Max", [peak, tiny], [f"{peak}_safe"], name=f"{prefix}safe_{target}"),
            helper.make_node("Div", [source, f"{peak}_safe"], [target], name=f"{prefix}scale_{target}")]


def reference(run, images: np.ndarray, axes: dict[str, int | None], peak_normalized: set[str] = frozenset()) -> dict[str, np.ndarray]:
    """What the wrapped graph should answer, from the source model: `run(images)` -> outputs dict,
    averaged over `images` and their mirrors in NumPy (the parity check's other side)."""
    plain = run(images)
    seen = run(np.ascontiguousarray(np.flip(images, IMAGE_WIDTH_AXIS)))
    found = {name: (plain[name] + (np.flip(seen[name], axes[name]) if axes[name] is not None else seen[name])) / 2
             for name in plain}
    for name in peak_normalized:
        peak = found[name].max(axis=tuple(range(1, found[name].ndim)), keepdims=True)
        found[name] = found[name] / np.maximum(peak, 1e-12)
    return found
