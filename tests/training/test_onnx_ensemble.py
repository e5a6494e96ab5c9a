"""onnx_ensemble: ONNX graphs merged into one answer the weighted mean of their answers, keep the
members' input and output names, shapes and free batch, and refuse graphs that do not fit together."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionzoo.training import ensemble, onnx_ensemble
from visionzoo.training.ensemble import EnsembleError
from visionzoo.training.onnx_ensemble import MergeError


def member(weights: np.ndarray, opset: int = 17, names=("score", "map")) -> onnx.ModelProto:
    """score = sum(x * W) (N,); map = relu(x * W) scaled to peak 1 (N, 4, 6, 1); node names shared by
    every member, as two exports of one recipe share them."""
    nodes = [
        helper.make_node("Mul", ["x", "W"], ["weighted"], name="weigh"),
        helper.make_node("ReduceSum", ["weighted", "axes"], [names[0]], keepdims=0, name="pool"),
        helper.make_node("Relu", ["weighted"], ["positive"], name="relu"),
        helper.make_node("ReduceMax", ["positive"], ["peak"], axes=[1, 2, 3], keepdims=1, name="peak"),
        helper.make_node("Div", ["positive", "peak"], [names[1]], name="scale"),
    ]
    graph = helper.make_graph(
        nodes, "member", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 1])],
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ["batch", 4, 6, 1])],
        [numpy_helper.from_array(weights.astype(np.float32), "W"), numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


def members(count: int = 3) -> list[onnx.ModelProto]:
    rng = np.random.default_rng(0)
    return [member(rng.normal(size=(1, 4, 6, 1))) for _ in range(count)]


X = np.random.default_rng(1).uniform(0, 1, (5, 4, 6, 1)).astype(np.float32)


def test_the_merged_graph_answers_the_weighted_mean():
    graphs = members(3)
    merged = onnx_ensemble.merge(graphs, [3, 1, 1], peak_normalized={"map"})
    found = run(merged, X)
    answers = [run(graph, X) for graph in graphs]
    by_hand = (3 * answers[0]["score"] + answers[1]["score"] + answers[2]["score"]) / 5
    np.testing.assert_allclose(found["score"], by_hand, rtol=1e-5)
    np.testing.assert_allclose(found["score"], onnx_ensemble.reference(answers, [3, 1, 1], {"map"})["score"], rtol=1e-5)
    for answer in answers:  # the members disagree, so the weights matter
        assert not np.allclose(found["score"], answer["score"])
    np.testing.assert_allclose(found["map"], onnx_ensemble.reference(answers, [3, 1, 1], {"map"})["map"], rtol=1e-5)
    np.testing.assert_allclose(found["map"].max(axis=(1, 2, 3)), 1.0, rtol=1e-6)  # scaled to peak 1 again
    # the merged graph looks like a member from outside: names, shapes, a free batch
    assert [i.name for i in merged.graph.input] == ["x"] and [o.name for o in merged.graph.output] == ["score", "map"]
    assert run(merged, X[:1])["map"].shape == (1, 4, 6, 1)


def test_a_graph_merged_with_itself_answers_as_it_does():
    graph = members(1)[0]
    merged = onnx_ensemble.merge([graph, graph], [3, 2], peak_normalized={"map"})
    for name, values in run(graph, X).items():
        np.testing.assert_allclose(run(merged, X)[name], values, rtol=1e-6, atol=1e-7)


def test_a_merged_graph_merges_again():
    first, second, third = members(3)
    inner = onnx_ensemble.merge([first, second], [1, 1])
    outer = onnx_ensemble.merge([inner, third], [2, 1])
    flat = onnx_ensemble.merge([first, second, third], [1, 1, 1])
    np.testing.assert_allclose(run(outer, X)["score"], run(flat, X)["score"], rtol=1e-5)


@pytest.mark.parametrize("other, weights, message", [
    (member(np.ones((1, 4, 6, 1)), names=("score", "heatmap")), [1, 1], "gives"),
    (member(np.ones((1, 4, 6, 1)), opset=13), [1, 1], "opsets"),
    (member(np.ones((1, 4, 6, 1))), [1, 0], "positive weight"),
    (member(np.ones((1, 4, 6, 1))), [1], "one positive weight per graph"),
])
def test_graphs_that_do_not_fit_are_refused(other, weights, message):
    with pytest.raises(MergeError, match=message):
        onnx_ensemble.merge([members(1)[0], other], weights)


def test_one_graph_is_not_an_ensemble():
    with pytest.raises(MergeError, match="two or more"):
        onnx_ensemble.merge(members(1), [1])


# --- visionzoo ensemble on export versions that ship ONNX only ---------------------------------

REPO = Path(__file__).resolve().parents[2]


def served_xray() -> Path:
    versions = [p for p in (REPO / "exported_models" / "mura_multitask_resnet").glob("[0-9]*") if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def copy_version(source: Path, root: Path) -> Path:
    folder = root / source.parent.name / source.name
    shutil.copytree(source, folder)
    return folder


def test_an_onnx_only_version_is_not_mixed_with_a_run_folder(tmp_path):
    run_folder = tmp_path / "runs" / "mura_multitask_resnet-20260101-000000"
    run_folder.mkdir(parents=True)
    (run_folder / "config.json").write_text("{}")
    with pytest.raises(EnsembleError, match="export .* first"):
        ensemble.ensemble([served_xray(), run_folder])


def test_versions_trained_on_different_splits_are_refused(tmp_path):
    other = copy_version(served_xray(), tmp_path / "other")
    document = json.loads((other / "metadata.json").read_text())
    document["data"]["split_seed"] += 1
    (other / "metadata.json").write_text(json.dumps(document))
    with pytest.raises(EnsembleError, match="different splits"):
        ensemble.ensemble([served_xray(), other])
    assert not list((tmp_path / "other" / "mura_multitask_resnet").glob(".staging-*"))


def test_versions_served_differently_are_refused(tmp_path):
    """A mirror-averaged graph and a plain one answer different questions; grow one kind at a time."""
    other = copy_version(served_xray(), tmp_path / "other")
    document = json.loads((other / "metadata.json").read_text())
    document["mirror_average"] = {"views": ["image", "left-right mirror"]}
    (other / "metadata.json").write_text(json.dumps(document))
    with pytest.raises(EnsembleError, match="differ in metadata.json mirror_average"):
        ensemble.ensemble([served_xray(), other])


def test_a_shipped_ensemble_merged_with_itself_keeps_its_answers(real_data, tmp_path):
    """Weighted by the networks each averages, a version merged with a copy of itself is the same
    ensemble twice over: the same metrics, every network listed twice, published as the next version."""
    shipped = served_xray()
    first, second = copy_version(shipped, tmp_path / "a"), copy_version(shipped, tmp_path / "b")
    before = json.loads((shipped / "metadata.json").read_text())
    folder = ensemble.ensemble([first, second], data_dir=str(real_data / "xray_fracatlas"))
    assert folder == first.parent / str(int(shipped.name) + 1)
    after = json.loads((folder / "metadata.json").read_text())
    networks = len(before["training"]["ensemble"]["members"])
    assert [entry["networks"] for entry in after["training"]["ensemble"]["merged"]["from"]] == [networks, networks]
    assert len(after["training"]["ensemble"]["members"]) == 2 * networks
    assert after["parity"]["passed"] and after["revision"]["from_version"] == shipped.name
    for split in ("val", "test"):
        for head, figure in (("abnormal", "auroc"), ("abnormal", "f1"), ("body_part", "accuracy")):
            assert after["metrics"][split][head][figure] == pytest.approx(before["metrics"][split][head][figure], abs=1e-6)
    # the golden outputs were re-derived on the merged graph and match the source's
    np.testing.assert_allclose(np.load(folder / "golden" / "expected.npz")["0/abnormal"],
                               np.load(shipped / "golden" / "expected.npz")["0/abnormal"], atol=1e-5)
    assert not (folder / "variables").exists() and "model_card" not in after
