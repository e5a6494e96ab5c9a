"""`visionzoo revise`: new versions from an export's own weights. Serving-setting revisions keep the
graph and SavedModel byte for byte and re-derive everything that depends on preprocessing."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from visionzoo.preprocessing import ImageSpec, prepare_tiles
from visionzoo.training import onnx_metadata, revise
from visionzoo.training.export import sha256

REPO = Path(__file__).resolve().parents[2]


def newest(name: str) -> Path:
    return max((REPO / "exported_models" / name).glob("[0-9]*"), key=lambda p: int(p.name))


@pytest.fixture()
def mars_copy(tmp_path) -> Path:
    source = newest("mars_dual_unet")
    target = tmp_path / "mars_dual_unet" / source.name
    shutil.copytree(source, target)
    return target


def test_a_serving_revision_is_a_new_version_with_the_same_graph(mars_copy):
    revised = revise.revise(mars_copy, tile_overlap=0.25, learnable_classes=[1, 2, 3, 4])
    assert revised.name == str(int(mars_copy.name) + 1)
    document = json.loads((revised / "metadata.json").read_text())
    assert document["version"] == revised.name and document["learnable_classes"] == [1, 2, 3, 4]
    assert document["preprocessing"]["tile_overlap"] == 0.25
    assert document["revision"]["from_version"] == mars_copy.name and len(document["revision"]["changes"]) == 2
    # Every file hashed, the weights untouched; the ONNX file differs only in its metadata_props.
    assert {path.relative_to(revised).as_posix() for path in revised.rglob("*") if path.name != "metadata.json"
            and path.is_file()} == set(document["files"])
    assert all(sha256(revised / name) == digest for name, digest in document["files"].items())
    for name in ("saved_model.pb", "variables/variables.data-00000-of-00001"):
        if (mars_copy / name).is_file():
            assert sha256(revised / name) == sha256(mars_copy / name)
    properties = onnx_metadata.read_properties(revised / "model.onnx")
    assert json.loads(properties["preprocessing"]) == document["preprocessing"]
    assert json.loads(properties["learnable_classes"]) == [1, 2, 3, 4]
    # Golden outputs follow the new tiling (more tiles per frame) and the model reproduces them.
    spec = ImageSpec.from_metadata(document["preprocessing"])
    session = ort.InferenceSession(str(revised / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = np.load(revised / "golden" / "expected.npz")
    listing = json.loads((revised / "golden" / "inputs.json").read_text())["inputs"]
    for index, name in enumerate(document["golden"]["files"]):
        tiles = prepare_tiles(revised / "golden" / name, spec).astype(np.float32)
        assert listing[index]["tiles"] == len(tiles) > 2
        (probabilities,) = session.run(None, {"image": tiles})
        np.testing.assert_allclose(probabilities, expected[f"{index}/probabilities"], atol=1e-5)
    assert mars_copy.is_dir() and not list(mars_copy.parent.glob(".staging-*"))  # the source stays, no debris


def test_decision_weights_revision_changes_serving_only(mars_copy):
    revised = revise.revise(mars_copy, decision_weights=[1, 1, 1, 0.5, 0.7])
    document = json.loads((revised / "metadata.json").read_text())
    assert document["decision_weights"] == [1.0, 1.0, 1.0, 0.5, 0.7]
    assert document["revision"]["changes"] == ["decision_weights = 1, 1, 1, 0.5, 0.7"]
    assert json.loads(onnx_metadata.read_properties(revised / "model.onnx")["decision_weights"]) == [1.0, 1.0, 1.0, 0.5, 0.7]
    # the graph and its inputs are unchanged, so the golden outputs are kept bit for bit (not re-run on
    # this machine's CPU, whose kernels may round differently from the exporting machine's)
    if (mars_copy / "variables").is_dir():
        assert sha256(revised / "variables/variables.data-00000-of-00001") == sha256(mars_copy / "variables/variables.data-00000-of-00001")
    for name in ("golden/expected.npz", "golden/inputs.json"):
        assert sha256(revised / name) == sha256(mars_copy / name)


def test_revisions_that_cannot_be_made_say_why(mars_copy):
    with pytest.raises(revise.ReviseError, match="nothing to change"):
        revise.revise(mars_copy)
    with pytest.raises(revise.ReviseError, match="two or more distinct indices below 5"):
        revise.revise(mars_copy, learnable_classes=[1, 9])
    with pytest.raises(revise.ReviseError, match="5 positive numbers .*classes: background, soil"):
        revise.revise(mars_copy, decision_weights=[1, 0.5])
    with pytest.raises(revise.ReviseError, match="tile_overlap must be in"):
        revise.revise(mars_copy, tile_overlap=1.5)
    with pytest.raises(revise.ReviseError, match="in a second revision"):
        revise.revise(mars_copy, explain=True, tile_overlap=0.5)
    with pytest.raises(revise.ReviseError, match="names no layer to explain"):
        revise.revise(mars_copy, explain=True)
    assert sorted(p.name for p in mars_copy.parent.iterdir()) == [mars_copy.name]  # nothing half-written


def test_explaining_needs_the_weights_in_the_version(tmp_path):
    folder = tmp_path / "mars_dual_unet" / "1"  # a shipped version's metadata, without its SavedModel
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text((newest("mars_dual_unet") / "metadata.json").read_text())
    with pytest.raises(revise.ReviseError, match="ships no SavedModel"):
        revise.revise(folder, explain=True)
