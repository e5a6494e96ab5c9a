"""Ensembles of exported ONNX graphs: several graphs of one input, their outputs averaged, as one graph.

`ensemble.py` averages Keras models, which needs every member's weights as a checkpoint or a
SavedModel. Shipped ensembles are ONNX-only (their members' checkpoints stay out of git), so growing
one by newly trained members happens here, on the graphs themselves:

    merged = merge([onnx.load("v1/model.onnx"), onnx.load("new/model.onnx")], weights=[3, 1],
                   peak_normalized={"cam"})

Member i's nodes, initializers and intermediate values are renamed under `onnx_member_{i}/` and read the
one shared input; every output is the weighted mean of the members' outputs of that name. Weights
are the number of networks a member already averages, so a merged ensemble is the plain mean over
all its networks. A map scaled to a peak of 1 (the Grad-CAM `cam`) is the weighted mean of the
members' maps scaled to a peak of 1 again: each member's map is already its own networks' Grad-CAM,
so the merged map is a mean of explanations, not the Grad-CAM of the merged score (gradcam.GradCam
explains a Keras ensemble that way: its members' channel sums are added before the ReLU).

This module needs only `onnx` (no TensorFlow); `visionzoo ensemble` uses it when a member is an
export version that ships ONNX only.
"""

from __future__ import annotations

import functools

import numpy as np

from .mirror_average import scale_to_peak

PREFIX = "onnx_member_"  # not "member_": Keras ensembles (ensemble.py) already name their nested models so
_AFTER = "onnx_ensemble/"


class MergeError(ValueError):
    """The graphs cannot be merged; the message says why."""


def _opsets(model) -> dict[str, int]:
    return {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}


def _signature(model) -> tuple[list, list]:
    """(inputs, outputs) as (name, element type, shape with free dimensions as None)."""
    initializers = {init.name for init in model.graph.initializer}

    def described(value):
        tensor = value.type.tensor_type
        return (value.name, tensor.elem_type,
                tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim))

    return ([described(v) for v in model.graph.input if v.name not in initializers],
            [described(v) for v in model.graph.output])


def check_mergeable(models: list) -> None:
    """One input, the same input and outputs (names, types, shapes) and the same opsets in every graph."""
    if len(models) < 2:
        raise MergeError(f"an ensemble needs two or more graphs, got {len(models)}")
    inputs, outputs = _signature(models[0])
    if len(inputs) != 1:
        raise MergeError(f"ensembles take one-input graphs; the first has {[name for name, *_ in inputs]}")
    for index, model in enumerate(models[1:], start=1):
        other_inputs, other_outputs = _signature(model)
        if other_inputs != inputs:
            raise MergeError(f"graph {index} takes {other_inputs}, graph 0 takes {inputs}")
        if sorted(other_outputs) != sorted(outputs):
            raise MergeError(f"graph {index} gives {sorted(other_outputs)}, graph 0 gives {sorted(outputs)}")
        if _opsets(model) != _opsets(models[0]):
            raise MergeError(f"graph {index} uses opsets {_opsets(model)}, graph 0 {_opsets(models[0])}: "
                             "export the members with one tf2onnx version and opset")
    for index, model in enumerate(models):
        if model.functions or any(attribute.type in (attribute.GRAPH, attribute.GRAPHS)
                                  for node in model.graph.node for attribute in node.attribute):
            raise MergeError(f"graph {index} has subgraphs or local functions, which merging does not rename")
    for _, element_type, _ in outputs:
        if element_type != 1:  # TensorProto.FLOAT
            raise MergeError("only float32 outputs can be averaged")


def merge(models: list, weights: list[float], peak_normalized: set[str] = frozenset()):
    """One graph whose every output is the `weights`-weighted mean of the `models`' outputs of that
    name; outputs in `peak_normalized` are divided by their per-image maximum afterwards."""
    import onnx
    from onnx import helper, numpy_helper

    check_mergeable(models)
    if len(weights) != len(models) or any(not np.isfinite(w) or w <= 0 for w in weights):
        raise MergeError(f"one positive weight per graph, got {weights} for {len(models)} graphs")
    (image, *_), = _signature(models[0])[0]
    outputs = [name for name, *_ in _signature(models[0])[1]]
    if not set(peak_normalized) <= set(outputs):
        raise MergeError(f"peak_normalized names {sorted(set(peak_normalized) - set(outputs))}, not outputs of the graphs")

    first = models[0]
    merged = onnx.ModelProto()
    merged.ir_version = max(model.ir_version for model in models)
    merged.opset_import.extend(first.opset_import)
    merged.producer_name, merged.producer_version = first.producer_name, first.producer_version
    graph = merged.graph
    graph.name = f"ensemble_of_{len(models)}"
    graph.input.extend(value for value in first.graph.input if value.name == image)
    graph.output.extend(first.graph.output)

    for index, model in enumerate(models):
        prefix = f"{PREFIX}{index}/"
        renamed = functools.partial(_member_name, prefix=prefix, shared=("", image))
        for node in model.graph.node:
            copy = graph.node.add()
            copy.CopyFrom(node)
            copy.name = prefix + (node.name or f"{node.op_type}_{len(graph.node)}")
            copy.input[:] = [renamed(name) for name in node.input]
            copy.output[:] = [renamed(name) for name in node.output]
        for init in model.graph.initializer:
            graph.initializer.add().CopyFrom(init)
            graph.initializer[-1].name = renamed(init.name)
        for value in model.graph.value_info:
            graph.value_info.add().CopyFrom(value)
            graph.value_info[-1].name = renamed(value.name)

    total = float(sum(weights))
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in graph.output}
    for name in outputs:
        terms = []
        for index, weight in enumerate(weights):
            share = f"{_AFTER}{name}/weight_{index}"
            graph.initializer.append(numpy_helper.from_array(np.asarray(weight / total, np.float32), share))
            terms.append(f"{_AFTER}{name}/term_{index}")
            graph.node.append(helper.make_node("Mul", [f"{PREFIX}{index}/{name}", share], [terms[-1]],
                                               name=f"{_AFTER}weigh_{name}_{index}"))
        mean = name if name not in peak_normalized else f"{_AFTER}{name}/mean"
        graph.node.append(helper.make_node("Sum", terms, [mean], name=f"{_AFTER}sum_{name}"))
        if name in peak_normalized:
            graph.node.extend(scale_to_peak(graph, mean, name, ranks[name], _opsets(first).get("ai.onnx", 0), _AFTER))
    onnx.checker.check_model(merged)
    return merged


def _member_name(name: str, prefix: str, shared: tuple[str, ...]) -> str:
    """A member's tensor name in the merged graph: under its prefix, except the shared input (and "", no input)."""
    return name if name in shared else prefix + name


def reference(answers: list[dict[str, np.ndarray]], weights: list[float], peak_normalized: set[str] = frozenset()) -> dict[str, np.ndarray]:
    """What the merged graph should answer, from each member's answers (the parity check's other side)."""
    total = float(sum(weights))
    found = {name: sum(answer[name] * (weight / total) for answer, weight in zip(answers, weights)) for name in answers[0]}
    for name in peak_normalized:
        peak = found[name].max(axis=tuple(range(1, found[name].ndim)), keepdims=True)
        found[name] = found[name] / np.maximum(peak, 1e-12)
    return found
