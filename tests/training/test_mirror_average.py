"""mirror_average: an ONNX graph wrapped to average over each image and its left-right mirror
answers what the source graph averaged in NumPy answers, its maps line up with the image sent, and
the shipped blood-cell version (built with `visionzoo revise --mirror-average`) answers a mirrored
file as it answers the original."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionzoo.preprocessing import ImageSpec, prepare_image
from visionzoo.training import mirror_average, revise

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = np.arange(1, 25, dtype=np.float32).reshape(1, 4, 6, 1)  # left and right differ


def asymmetric_model() -> onnx.ModelProto:
    """score = sum(x * W) (N,); map = x * W * score (N, 4, 6, 1): an output the graph also consumes."""
    nodes = [
        helper.make_node("Mul", ["x", "W"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axes"], ["score"], keepdims=0),
        helper.make_node("Reshape", ["score", "column"], ["score_column"]),
        helper.make_node("Mul", ["weighted", "score_column"], ["map"]),
    ]
    graph = helper.make_graph(
        nodes, "asymmetric", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("map", TensorProto.FLOAT, ["batch", 4, 6, 1])],
        [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
         numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "column")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


AXES = {"score": None, "map": 2}


def test_the_wrapped_graph_is_the_source_averaged_over_the_mirror():
    source = asymmetric_model()
    wrapped = mirror_average.wrap(source, AXES)
    onnx.checker.check_model(wrapped)
    x = np.random.default_rng(0).uniform(0, 1, (3, 4, 6, 1)).astype(np.float32)
    found = run(wrapped, x)
    expected = mirror_average.reference(lambda batch: run(source, batch), x, AXES)
    for name in AXES:
        np.testing.assert_allclose(found[name], expected[name], rtol=1e-6)
    # by hand: the score of the mirror weighs each pixel with the mirrored weights
    by_hand = ((x * WEIGHTS).sum((1, 2, 3)) + (x[:, :, ::-1] * WEIGHTS).sum((1, 2, 3))) / 2
    np.testing.assert_allclose(found["score"], by_hand, rtol=1e-6)
    assert not np.allclose(found["score"], run(source, x)["score"])  # the source is not mirror-symmetric
    # same names, shapes and batch freedom as the source
    assert [o.name for o in wrapped.graph.output] == ["score", "map"] and [i.name for i in wrapped.graph.input] == ["x"]
    assert run(wrapped, x[:1])["map"].shape == (1, 4, 6, 1)


def test_a_mirrored_image_gets_the_same_answer_and_a_mirrored_map():
    wrapped = mirror_average.wrap(asymmetric_model(), AXES)
    x = np.random.default_rng(1).uniform(0, 1, (2, 4, 6, 1)).astype(np.float32)
    plain, mirrored = run(wrapped, x), run(wrapped, np.ascontiguousarray(x[:, :, ::-1]))
    np.testing.assert_allclose(mirrored["score"], plain["score"], rtol=1e-6)
    np.testing.assert_allclose(mirrored["map"], plain["map"][:, :, ::-1], rtol=1e-6)


def test_a_peak_normalized_map_peaks_at_one_again():
    """The Grad-CAM map is scaled to a peak of 1; the mean of two such maps is scaled again."""
    source = asymmetric_model()
    wrapped = mirror_average.wrap(source, AXES, peak_normalized={"map"})
    onnx.checker.check_model(wrapped)
    x = np.random.default_rng(2).uniform(0, 1, (3, 4, 6, 1)).astype(np.float32)
    found = run(wrapped, x)
    np.testing.assert_allclose(found["map"].max(axis=(1, 2, 3)), 1.0, rtol=1e-6)
    expected = mirror_average.reference(lambda batch: run(source, batch), x, AXES, {"map"})
    np.testing.assert_allclose(found["map"], expected["map"], rtol=1e-5)
    np.testing.assert_allclose(found["score"], expected["score"], rtol=1e-6)  # answers are not rescaled
    assert run(wrapped, np.zeros_like(x))["map"].max() == 0  # an all-zero map stays zero, no division by zero


def test_graphs_it_cannot_wrap_say_why():
    wrapped = mirror_average.wrap(asymmetric_model(), AXES)
    with pytest.raises(ValueError, match="already averages"):
        mirror_average.wrap(wrapped, AXES)
    with pytest.raises(ValueError, match="axes must name every output"):
        mirror_average.wrap(asymmetric_model(), {"score": None})
    with pytest.raises(ValueError, match="not outputs of the graph"):
        mirror_average.wrap(asymmetric_model(), AXES, peak_normalized={"cam"})


def test_maps_are_found_from_the_metadata():
    classification = {"task": "classification", "explain": {"tensor": "cam"},
                      "outputs": [{"name": "probabilities", "shape": [-1, 8]}, {"name": "cam", "shape": [-1, 3, 3]}]}
    assert mirror_average.width_axes(classification) == {"probabilities": None, "cam": 2}
    assert mirror_average.peak_normalized(classification) == {"cam"}
    segmentation = {"task": "segmentation", "outputs": [{"name": "probabilities", "shape": [-1, 64, 128, 5]}]}
    assert mirror_average.width_axes(segmentation) == {"probabilities": 2}


def served_bloodcell() -> Path:
    return max((REPO / "exported_models" / "bloodcell_mobilenetv3").glob("[0-9]*"), key=lambda p: int(p.name))


def test_the_shipped_blood_cell_model_answers_a_mirrored_cell_as_the_cell():
    folder = served_bloodcell()
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["mirror_average"]["mirrored_back"] == ["cam"] and metadata["parity"]["passed"]
    spec = ImageSpec.from_metadata(metadata["preprocessing"])
    images = np.stack([prepare_image(folder / "golden" / name, spec) for name in metadata["golden"]["files"]]).astype(np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    plain = dict(zip(["probabilities", "cam"], session.run(["probabilities", "cam"], {"image": images})))
    mirrored = dict(zip(["probabilities", "cam"], session.run(["probabilities", "cam"], {"image": np.ascontiguousarray(images[:, :, ::-1])})))
    np.testing.assert_allclose(mirrored["probabilities"], plain["probabilities"], atol=1e-5)
    np.testing.assert_allclose(mirrored["cam"], plain["cam"][:, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(plain["cam"].max(axis=(1, 2)), 1.0, atol=1e-5)  # Grad-CAM's scale: peak 1


def test_revising_a_mirrored_version_again_is_refused(tmp_path):
    folder = tmp_path / "bloodcell_mobilenetv3" / "9"
    folder.mkdir(parents=True)
    shutil.copy(served_bloodcell() / "metadata.json", folder / "metadata.json")
    with pytest.raises(revise.ReviseError, match="already averages over mirrors"):
        revise.revise(folder, mirror=True)
    with pytest.raises(revise.ReviseError, match="changes the graph; change serving settings in a second revision"):
        revise.revise(folder, mirror=True, tile_overlap=0.5)
    with pytest.raises(revise.ReviseError, match="make them two revisions"):
        revise.revise(folder, mirror=True, explain=True)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["9"]


def test_the_cli_says_how_the_metrics_moved(tmp_path):
    source, revised = tmp_path / "x" / "3", tmp_path / "x" / "4"
    for folder, (accuracy, balanced) in ((source, (0.9687, 0.9689)), (revised, (0.9749, 0.9749))):
        folder.mkdir(parents=True)
        scores = {"accuracy": accuracy, "balanced_accuracy": balanced}
        (folder / "metadata.json").write_text(json.dumps({"metrics": {"val": scores, "test": {"accuracy": 1, "balanced_accuracy": 1}}}))
    assert revise.metrics_change(source, revised) == [
        "val: accuracy 0.9687, balanced accuracy 0.9689 -> accuracy 0.9749, balanced accuracy 0.9749"]
