"""Grad-CAM in the exported graph (visionzoo/training/gradcam.py): the map follows the evidence,
the export carries it as output `cam` with parity, and bad requests to explain fail by name."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import tf_keras as keras

from visionzoo.preprocessing import ImageSpec
from visionzoo.serving.repository import golden_tolerance
from visionzoo.training import export, gradcam


def brightness_classifier(pooling: str) -> keras.Model:
    """A hand-set net whose class 0 means "something bright": one 1x1 conv measuring brightness,
    pooled, then a dense layer that raises class 0 with it. Its evidence is exactly where the image
    is bright, so a correct Grad-CAM map must peak there."""
    inputs = keras.Input((16, 16, 1), name="image")
    features = keras.layers.Conv2D(2, 1, activation="relu", name="features")(inputs)
    if pooling == "gap":
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    else:
        pooled = keras.layers.Flatten(name="pool")(features)
    hidden = keras.layers.Dense(4, activation="sigmoid", name="hidden")(pooled)  # SigmoidGrad in the tape
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.array([[[[1 / 255, 0.0]]]], np.float32), np.zeros(2, np.float32)])
    units = pooled.shape[-1]
    model.get_layer("hidden").set_weights([np.full((units, 4), 4.0 / units, np.float32), np.full(4, -1.0, np.float32)])
    model.get_layer("probabilities").set_weights([np.array([[1.0, -1.0]] * 4, np.float32), np.zeros(2, np.float32)])
    return model


def square_at(column: int) -> np.ndarray:
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 6:10, column : column + 4] = 255.0
    return image


@pytest.mark.parametrize("pooling", ["gap", "flatten"])
def test_the_map_peaks_on_the_evidence_and_moves_with_it(pooling):
    explainer = gradcam.GradCam(brightness_classifier(pooling), gradcam.Explanation("pool", "probabilities"))
    for column in (1, 11):
        outputs = explainer(square_at(column))
        cam = np.asarray(outputs["cam"])[0]
        assert cam.shape == (16, 16) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        assert int(np.asarray(outputs["probabilities"]).argmax()) == 0
        rows, columns = np.nonzero(cam > 0.5)
        assert set(rows) <= set(range(6, 10)) and set(columns) <= set(range(column, column + 4)), (column, cam)


def test_the_export_adds_cam_with_parity_and_describes_it(tmp_path):
    model = brightness_classifier("gap")
    explanation = gradcam.Explanation("pool", "probabilities")
    from visionzoo.training.data.common import Examples

    squares = np.concatenate([square_at(2 * i) * (i + 1) / 6 for i in range(6)])  # brighter to the right
    real = Examples(images=squares.astype(np.uint8), targets={}, ids=np.array([f"square#{i}" for i in range(6)]))
    folder = export.export_model(model, "brightness", tmp_path, image_spec=ImageSpec(16, 16, "grayscale"),
                                 task_kind="classification", output_labels={"probabilities": ["bright", "dark"]},
                                 explain=explanation, real_examples=real)
    metadata = json.loads((folder / "metadata.json").read_text())
    # the golden map is held to the map's own tolerance on other machines, the probabilities to 1e-4
    assert golden_tolerance(metadata["golden"], "cam") == export.CAM_PARITY_TOLERANCE
    assert golden_tolerance(metadata["golden"], "probabilities") == export.PARITY_TOLERANCE
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "cam"]
    assert metadata["outputs"][1]["shape"] == [-1, 16, 16]
    assert metadata["explain"]["layer"] == "pool" and metadata["explain"]["method"] == "Grad-CAM"
    assert metadata["parity"]["outputs"]["cam"]["max_abs_diff_onnx"] <= export.CAM_PARITY_TOLERANCE
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    images = np.concatenate([square_at(1), square_at(11)])
    probabilities, cam = session.run(["probabilities", "cam"], {"image": images})
    np.testing.assert_allclose(probabilities, model(images).numpy(), atol=1e-5)
    assert cam[0, 6:10, 1:5].min() > 0.5 and cam[0, :, 8:].max() < 0.5 and cam[1, 6:10, 11:15].min() > 0.5


def test_explaining_the_wrong_layer_or_output_fails_by_name():
    model = brightness_classifier("gap")
    with pytest.raises(gradcam.ExplainError, match="no layer named 'conv9'"):
        gradcam.GradCam(model, gradcam.Explanation("conv9", "probabilities"))
    with pytest.raises(gradcam.ExplainError, match="is a Dense"):
        gradcam.GradCam(model, gradcam.Explanation("hidden", "probabilities"))
    with pytest.raises(gradcam.ExplainError, match="no output 'abnormal'"):
        gradcam.GradCam(model, gradcam.Explanation("pool", "abnormal"))


def test_the_served_recipes_name_layers_their_models_have():
    from visionzoo.training.registry import get_recipe

    for name, options in (("bloodcell_mobilenetv3", {"weights": None, "fine_tune_from": None}), ("mura_multitask_cnn", {})):
        recipe = get_recipe(name)
        shape = recipe.test_input_shape or (96, 96, 3)
        model = recipe.builder(input_shape=shape, **{**recipe.model_options, **options})
        explainer = gradcam.GradCam(model, recipe.explain)
        outputs = explainer(np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32))
        assert outputs["cam"].shape[1:] == explainer.cam_shape and set(outputs) == {*model.output_names, "cam"}
        keras.backend.clear_session()


def test_int8_keeps_the_map_in_fp32_and_compiles_in_openvino_at_fixed_batch(tmp_path):
    """Quantizing the gradient tape broke OpenVINO at batch 8 (MultiplyPartialTransformation) and
    bought nothing: only the answer's path is quantized."""
    import onnx
    import openvino as ov

    from visionzoo.training import quantize

    model = brightness_classifier("gap")
    folder = export.export_model(model, "brightness", tmp_path, image_spec=ImageSpec(16, 16, "grayscale"),
                                 task_kind="classification", output_labels={"probabilities": ["bright", "dark"]},
                                 explain=gradcam.Explanation("pool", "probabilities"))
    calibration = np.concatenate([square_at(2 * i) * (i + 1) / 6 for i in range(6)])
    target = tmp_path / "model.int8.onnx"
    quantize.quantize_file(folder / "model.onnx", target, calibration)
    graph = onnx.load(str(target)).graph
    explanation_only = set(quantize.explanation_only_nodes(graph))
    dequantize = [n.name for n in graph.node if n.op_type == "DequantizeLinear"]
    assert explanation_only and dequantize  # the answer's path is quantized ...
    assert not explanation_only & set(dequantize)  # ... and nothing that only the map needs
    core = ov.Core()
    fixed = core.read_model(str(target))
    fixed.reshape({fixed.inputs[0].get_any_name(): [8, 16, 16, 1]})
    compiled = core.compile_model(fixed, "CPU")
    result = compiled(np.concatenate([calibration, calibration[:2]]).astype(np.float32))
    cam = result[compiled.output("cam")]
    assert cam.shape == (8, 16, 16) and cam[0, 6:10, 0:4].min() > 0.5
