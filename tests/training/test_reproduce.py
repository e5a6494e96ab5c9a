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
    assert all(r.data in ("mnist", "fashion_mnist", "cifar10_jpg") for r in reproduce.REPRODUCTIONS.values())


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
    assert set(reproduce.NOT_MEASURED) <= set(RECIPES)
    assert all(name in reproduce.NOT_MEASURED for name in missing), set(missing) - set(reproduce.NOT_MEASURED)
    report = reproduce.render(records)
    for name in missing:
        reason, command = reproduce.NOT_MEASURED[name]
        assert f"| `{name}` |" in report and f"`{command}`" in report
    assert "/work/" not in report and "/root/" not in report  # no machine paths in a committed table
