"""`visionzoo reproduce` wiring on synthetic data in the real layouts (one training step per model):
run folders, reproduction.json, the staged final model, and the generated table. The real
reproduction (hours on CPU) is `make reproduce`, not a test."""

from __future__ import annotations

import json

import pytest

from visionzoo.training import reproduce
from visionzoo.training.__main__ import main
from visionzoo.training.data import synthetic as writers
from visionzoo.training.registry import RECIPES

ONE_STEP = ["--smoke", "--set", "steps_per_epoch=1", "--set", "data_options.validation=fraction:0.2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The shared-data layout: mnist/, fashion_mnist/, cifar10_jpg/ as in ../shared/data."""
    root = tmp_path_factory.mktemp("shared_data")
    writers.write_mnist_pngs(root / "mnist")
    writers.write_fashion_pngs(root / "fashion_mnist")
    writers.write_image_folders_tar(root / "cifar10_jpg")
    return root


def test_every_target_is_a_registered_recipe_and_the_defaults_are_the_issue_list():
    assert {entry.model for entry in reproduce.REPRODUCTIONS.values()} <= set(RECIPES)
    assert reproduce.REPRODUCTIONS["mnist_4conv_double_softmax"].model == "mnist_4conv"
    assert set(reproduce.DEFAULT_MODELS) == {
        "fashion_mnist_mlp", "fashion_mnist_cnn", "mnist_lenet", "mnist_4conv", "cifar10_cnn", "cifar10_cnn2", "cifar10_ablation_base"}
    shared_folders = {"mnist", "fashion_mnist", "cifar10_jpg", "xray_fracatlas", "dogs_vs_cats", "mars_ai4mars", "blood_pbc"}
    assert all(r.data in shared_folders for r in reproduce.REPRODUCTIONS.values())
    # every registry model can be reproduced here (a row's entry), or is a served model trained by `make ship`
    served = {name for name, reason in reproduce.NOT_MEASURED.items() if reason in (reproduce.SHIPPED, reproduce.PRETRAINING)}
    assert {r.model for r in reproduce.REPRODUCTIONS.values()} | served == set(RECIPES)


def test_shortened_schedules_say_what_they_cut_and_full_schedule_restores_the_sources():
    entry = reproduce.REPRODUCTIONS["alexnet"]
    assert entry.stage_settings() == [{"epochs": 2, "max_examples": 5000}] and entry.stage_settings(full_schedule=True) == [{}]
    note = entry.schedule_note()
    assert "2 of the source's 100 epochs" in note and "first 5,000 examples" in note
    assert "`visionzoo reproduce --models alexnet --data-dir $VISIONZOO_DATA --full-schedule`" in note
    final = reproduce.REPRODUCTIONS["cifar10_final"]  # staged: the source's 40 + 20 + 50 (augmented), shortened per stage
    assert final.source_epochs() == 110 and "25 of the source's 110 epochs" in final.schedule_note()
    assert final.stage_settings() == [{"epochs": 10}, {"epochs": 5}, {"epochs": 10, "augmentation": "cifar_shift_flip"}]
    assert reproduce.REPRODUCTIONS["mnist_lenet"].schedule_note() == ""  # the source's schedule fits
    # models whose figure needs ImageNet weights run from scratch here, and the row says what to expect with them
    transfer = reproduce.REPRODUCTIONS["mura_resnet50_gap"]
    assert dict(transfer.overrides)["model_options.weights"] is None and transfer.source_accuracy is None
    assert "--weights imagenet" in transfer.caveat and "FracAtlas" in transfer.caveat
    # on the AI4Mars stand-in "background" means unlabelled: no loss there, as for the shipped model
    for name in ("mars_bigrock_unet", "mars_ensemble"):
        assert dict(reproduce.REPRODUCTIONS[name].overrides)["ignore_background"] is True


def test_scores_name_the_figure_binary_heads_give_auroc_and_segmenters_mean_iou():
    binary = {"abnormal": {"accuracy": 0.75, "auroc": 0.6125, "f1": 0.5}, "examples": 8}
    assert reproduce._score(binary) == 0.75
    assert reproduce._score_text(binary, "accuracy") == "0.7500 (abnormal accuracy, AUROC 0.613)"
    assert reproduce._score_text({"mean_iou": 0.4321, "pixel_accuracy": 0.8}, "mean_iou") == "mean IoU 0.432"
    assert reproduce._score_text({"accuracy": 0.9}, "accuracy") == "0.9000"
    assert reproduce._last_validation([{"val_abnormal_accuracy": "0.5", "abnormal_accuracy": "0.9"}], "accuracy") == 0.5
    assert reproduce._last_validation([{"val_mean_iou": "0.25", "val_loss": "1"}], "mean_iou") == 0.25


def test_a_shortened_row_records_its_schedule_and_the_table_says_so(data_dir, tmp_path):
    runs = tmp_path / "runs"
    short = reproduce.reproduce_model("kaggle_lenet50", data_dir, runs, {"smoke": True, "steps_per_epoch": 1})
    assert main(["reproduce", "--models", "kaggle_lenet50", "--data-dir", str(data_dir), "--out", str(tmp_path / "full"),
                 "--report", str(tmp_path / "full.md"), "--smoke", "--set", "steps_per_epoch=1", "--full-schedule"]) == 0
    full = next((tmp_path / "full").glob("kaggle_lenet50-*"))
    assert json.loads((short / "reproduction.json").read_text())["shortened"] is True
    assert json.loads((short / "reproduction.json").read_text())["schedule"] == [{"epochs": 10}]  # the row describes what ran
    assert json.loads((full / "reproduction.json").read_text())["shortened"] is False
    assert "--full-schedule" in json.loads((full / "reproduction.json").read_text())["command"]
    assert json.loads((short / "config.json").read_text())["epochs"] == 10  # the stage's shortening, not the recipe's 100
    text = reproduce.render(reproduce.collect(runs))
    row = next(line for line in text.splitlines() if line.startswith("| `kaggle_lenet50` |"))
    assert "(shortened; source 100) |" in row and "| n/a |" in row  # no Δ: the source failed, on other data
    assert "- `kaggle_lenet50`: shortened schedule (10 of the source's 100 epochs)" in text


def test_reproduce_writes_run_folders_and_the_table(data_dir, tmp_path, capsys):
    runs, report = tmp_path / "runs", tmp_path / "REPRODUCTION.md"
    code = main(["reproduce", "--models", "mnist_4conv_double_softmax", "cifar10_ablation_base", "--data-dir", str(data_dir),
                 "--out", str(runs), "--report", str(report), *ONE_STEP])
    assert code == 0 and f"report: {report}" in capsys.readouterr().out
    records = sorted(runs.glob("*/reproduction.json"))
    assert [json.loads(p.read_text())["target"] for p in records] == ["cifar10_ablation_base", "mnist_4conv_double_softmax"]
    record = json.loads(records[1].read_text())
    assert record["data_dir"] == str(data_dir / "mnist") and record["smoke"] and record["wall_seconds"] > 0
    config = json.loads((records[1].parent / "config.json").read_text())
    assert config["model"] == "mnist_4conv" and config["model_options"]["source_double_softmax"] is True
    text = report.read_text()
    assert "| `mnist_4conv` with source_double_softmax=True | §1.1 | test 9793/10000 final (best 9805) |" in text
    assert "| `cifar10_ablation_base` | §3.4 |" in text and "Smoke runs" in text
    assert text.index("mnist_4conv") < text.index("cifar10_ablation_base")  # table order = REPRODUCTIONS order
    assert "--models mnist_4conv_double_softmax" in record["command"]
    commands = next(line for line in text.splitlines() if line.startswith("Commands"))
    assert commands.count("`visionzoo reproduce --models NAME --data-dir") == 1  # one form, not one per row

    report.unlink()  # the table can be rebuilt from the run folders alone
    assert main(["reproduce", "--report-only", "--out", str(runs), "--report", str(report)]) == 0
    assert "| `mnist_4conv` with source_double_softmax=True |" in report.read_text()


def test_staged_reproduction_continues_each_stage_from_the_last(data_dir, tmp_path):
    runs = tmp_path / "runs"
    last = reproduce.reproduce_model("cifar10_final", data_dir, runs, {"smoke": True, "steps_per_epoch": 1})
    record = json.loads((last / "reproduction.json").read_text())
    assert len(record["stages"]) == 3 and record["stages"][-1] == last.name
    configs = [json.loads((runs / stage / "config.json").read_text()) for stage in record["stages"]]
    assert configs[0]["model_options"]["weights"] is None
    assert configs[1]["model_options"]["weights"] == str(runs / record["stages"][0] / "best_model.keras")
    assert [c["augmentation"] for c in configs] == [None, None, "cifar_shift_flip"]


def test_reproduce_refuses_unknown_models_and_missing_data(tmp_path, capsys):
    assert main(["reproduce", "--models", "mnist_lenet_v9", "--data-dir", str(tmp_path)]) == 2
    assert "no reproduction target for 'mnist_lenet_v9'" in capsys.readouterr().err
    assert main(["reproduce", "--models", "mnist_lenet", "--out", str(tmp_path)]) == 2
    assert "--data-dir is required" in capsys.readouterr().err


def test_every_registry_model_is_measured_shipped_or_listed_with_a_reason_and_a_command():
    """The table accounts for the whole registry: measured rows, shipped versions, and the rest
    under "Not measured here", each with why and the command that trains it."""
    from pathlib import Path

    records = reproduce.collect(Path("runs"))
    shipped = reproduce.shipped_rows()
    missing = reproduce.unmeasured(records, set(shipped))
    measured = {reproduce.REPRODUCTIONS[t].model for t in records if t in reproduce.REPRODUCTIONS}
    assert measured | set(shipped) | set(missing) == set(RECIPES)
    assert (f"Coverage: {len(measured)} of the {len(RECIPES)} registry models measured above, {len(shipped)} shipped, "
            f"{len(missing)} not measured.") in reproduce.render(records)
    assert set(reproduce.NOT_MEASURED) <= set(RECIPES)
    report = reproduce.render(records)
    for name in missing:
        reason = reproduce.NOT_MEASURED.get(name, reproduce.NOT_RUN_YET)
        assert f"| `{name}` |" in report and reason in report and f"`{reproduce.train_command(name)}`" in report
    assert "/work/" not in report and "/root/" not in report  # no machine paths in a committed table
    assert f"`visionzoo list` shows every model ({len(RECIPES)})" in Path("README.md").read_text()
