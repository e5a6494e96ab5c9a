"""The `visionzoo` command as a user runs it (a real subprocess)."""

import json
import os
import subprocess
import sys

import pytest

from visionzoo.training.registry import RECIPES, families


def visionzoo(*args, cwd=None, check=True, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "visionzoo.training", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"visionzoo {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_list_shows_every_model_grouped_by_family():
    output = visionzoo("list").stdout
    for family, recipes in families().items():
        assert family in output
        for recipe in recipes:
            line = next(line for line in output.splitlines() if f" {recipe.name} " in f"{line} ")
            assert recipe.summary in line
    assert len(RECIPES) == sum(1 for line in output.splitlines() if line.startswith((" * ", "   ")))


@pytest.mark.parametrize("args", [["list"], ["train", "bloodcell_mobilenetv3", "--help"]], ids=["list", "model-help"])
def test_listing_and_help_do_not_import_tensorflow(args):
    code = ("import sys; from visionzoo.training.__main__ import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit as stop:\n    assert stop.code in (0, None), stop.code\n"
            "loaded = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]\n"
            "assert not loaded, loaded; print('tf-free')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tf-free" in result.stdout and "bloodcell_mobilenetv3" in result.stdout


def test_model_help_knows_which_builders_take_weights_without_importing_them():
    """The "weights" row reads each builder's parameters from its source; they match the imported function's."""
    import inspect

    for recipe in RECIPES.values():
        assert recipe.builder.parameter_names() == set(inspect.signature(recipe.builder.resolve()).parameters), recipe.name


def test_list_into_a_closed_pipe_stops_without_a_traceback():
    """`visionzoo list | head -3`: the reader leaves before the listing is written."""
    process = subprocess.Popen([sys.executable, "-m", "visionzoo.training", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors


def test_help_explains_every_train_flag():
    output = visionzoo("train", "--help").stdout
    for flag in ("--data-dir", "--epochs", "--batch-size", "--smoke", "--out", "--set", "--strategy", "--precision", "--skip-bad", "--weights",
                 "--resume"):
        assert flag in output
    assert "recipe defaults" not in output


def test_model_help_shows_the_recipes_defaults():
    output = visionzoo("train", "bloodcell_mobilenetv3", "--help").stdout
    assert "--data-dir" in output and "--resume" in output  # the generic options stay
    section = output.split("recipe defaults for bloodcell_mobilenetv3", 1)[1]
    recipe = RECIPES["bloodcell_mobilenetv3"]
    expected = {"epochs": str(recipe.epochs), "batch size": str(recipe.batch_size), "optimizer": "adam",
                "learning rate": "0.001", "weights": "imagenet", "data formats": "blood_pbc, blood_npz",
                "augmentation": "bloodcell_source", "callbacks": "early_stopping"}
    lines = {line.split("  ")[1].strip(): line for line in section.splitlines() if line.startswith("  ")}
    for label, value in expected.items():
        assert value in lines[label], (label, lines.get(label))
    other = visionzoo("train", "mnist_lenet", "--help").stdout
    assert "recipe defaults for mnist_lenet" in other and "bloodcell" not in other.split("recipe defaults", 1)[1]


def test_train_smoke_then_export_on_a_synthetic_an2dl_npz(mars_smoke_run, tmp_path):
    """The foundation's acceptance run: train mars_dual_unet --smoke, then export the run."""
    _, run = mars_smoke_run  # visionzoo train mars_dual_unet --smoke --set ignore_background=true (conftest.py)
    for name in ("config.json", "data.json", "history.csv", "best_model.keras", "metrics.json", "training.json", "plots/learning_curves.png",
                 "plots/iou_val.png", "plots/overlays_val.png"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents.*"))
    assert json.loads((run / "config.json").read_text())["smoke"] is True
    assert json.loads((run / "status.json").read_text())["state"] == "smoke"

    result = visionzoo("evaluate", str(run), "--split", "val")
    assert "evaluate [1/1] val split: predicting" in result.stderr

    refused = visionzoo("export", str(run), "--out", str(tmp_path / "exported"), check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert [line for line in refused.stderr.splitlines() if "error:" in line] == [(
        f"visionzoo export: error: {run} is a smoke run (a few batches at toy size), not a trained model; "
        "train without --smoke, or pass --force to export it anyway")]
    assert not (tmp_path / "exported").exists()

    result = visionzoo("export", str(run), "--out", str(tmp_path / "exported"), "--force", "--tile-overlap", "0.5")
    folder = tmp_path / "exported" / "mars_dual_unet" / "1"
    assert f"exported: {folder}" in result.stdout
    assert all(f"export [{step}/5]" in result.stderr for step in range(1, 6))
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"]["passed"] and metadata["parity"]["outputs"]["probabilities"]["max_abs_diff_onnx"] < 1e-4
    assert metadata["metrics"]["val"]["mean_iou"] >= 0
    assert metadata["recipe"]["name"] == "mars_dual_unet" and metadata["data"]["artifact_samples_removed"] == 4
    # trained with background ignored: serving's arg-max skips it; the served version cuts overlapping tiles
    assert metadata["learnable_classes"] == [1, 2, 3, 4] and metadata["preprocessing"]["tile_overlap"] == 0.5
    assert (folder / "saved_model.pb").is_file() and (folder / "variables" / "variables.index").is_file()  # TF Serving layout
    assert (folder / "model.onnx").is_file()


def test_errors_are_one_clear_line_not_a_traceback(tmp_path):
    result = visionzoo("train", "mars_dual_unet", "--data-dir", str(tmp_path / "missing"), check=False)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = visionzoo("train", "no_such_model", "--data-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "visionzoo list" in result.stderr
    result = visionzoo("evaluate", str(tmp_path), check=False)
    assert result.returncode == 2 and "not a run folder" in result.stderr
    result = visionzoo("train", "--data-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "MODEL and --data-dir" in result.stderr


@pytest.mark.parametrize("bad, message", [("epochs", "KEY=VALUE"), ("learning_rate=1e-3", "unknown setting"),
                                          ("epochs.count=3", "not a group of settings")])
def test_bad_set_values_are_rejected_with_the_reason(bad, message, tmp_path):
    result = visionzoo("train", "mars_dual_unet", "--data-dir", str(tmp_path), "--set", bad, check=False)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "epochs must be a whole number of at least 1, got 0"),
    (["--batch-size", "-3"], "batch_size must be a whole number of at least 1, got -3"),
    (["--set", "epochs=ten"], "epochs must be a whole number of at least 1, got 'ten'"),
    (["--set", "optimizer.learning_rate=-1e-3"], "optimizer.learning_rate must be a positive number"),
    (["--set", "label_smoothing=1"], "label_smoothing must be a number from 0 up to (not including) 1"),
], ids=["epochs", "batch", "text", "rate", "smoothing"])
def test_impossible_numbers_are_refused_before_the_data_loads(flags, message, synthetic):
    """Refused when the settings resolve: before, `--epochs 0` read the whole dataset and built the model first."""
    result = visionzoo("train", "bloodcell_mobilenetv3", "--data-dir", str(synthetic["blood_pbc"]), *flags, check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    code = ("import sys; from visionzoo.training.__main__ import main; "
            f"assert main(['train', 'bloodcell_mobilenetv3', '--data-dir', {str(synthetic['blood_pbc'])!r}, *{flags!r}]) == 2; "
            "assert 'tensorflow' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False).returncode == 0


def test_every_recipes_own_settings_pass_the_check():
    from visionzoo.training.recipe import TrainConfig

    for recipe in RECIPES.values():
        TrainConfig.from_recipe(recipe, "data").check()
