"""benchmarks.xray_sizes on six real FracAtlas test images: the served X-ray model names the same
body part when a file is re-saved at half or four times its size, and the report has the shape
benchmarks/xray_sizes.json (quoted by the model cards) has."""

import json

import pytest

from benchmarks import xray_sizes
from benchmarks.paths import served_export

pytestmark = pytest.mark.realdata

METRICS = {"count", "body_part_accuracy", "abnormal_auroc", "abnormal_f1", "body_part_agreement_with_original",
           "abnormal_decision_agreement_with_original", "mean_abs_abnormal_probability_change", "over_service_limits"}


@pytest.fixture(scope="module")
def report(real_data):
    return xray_sizes.run(xray_sizes.resolve_data_dir(real_data), limit=6, show_progress=False)


def test_resized_files_keep_the_body_part(report):
    for name in ("x0.5 jpeg", "x0.5 png", "x4 jpeg", "x4 png"):
        assert report["conditions"][name]["body_part_agreement_with_original"] >= 5 / 6, name


def test_report_shape(report):
    assert list(report["conditions"]) == [condition.name for condition in xray_sizes.CONDITIONS]
    for metrics in report["conditions"].values():
        assert set(metrics) == METRICS and metrics["count"] == 6
    assert report["conditions"]["original"]["body_part_agreement_with_original"] == 1.0
    splits = report["large_images_original"]["splits"]
    assert set(splits) == {"train", "val", "test"}
    for groups in splits.values():
        assert set(groups) == {"large", "other"}
        assert groups["large"]["count"] + groups["other"]["count"] == 6
    assert report["model"]["export"] == served_export("mura") and 0 < report["model"]["threshold"] < 1
    json.dumps(report, allow_nan=False)  # plain JSON: no numpy types, no NaN


def test_data_dir_is_the_folder_or_its_parent(real_data):
    folder = real_data / "xray_fracatlas"
    assert xray_sizes.resolve_data_dir(real_data) == folder == xray_sizes.resolve_data_dir(folder)
    with pytest.raises(FileNotFoundError):
        xray_sizes.resolve_data_dir(real_data / "mnist")
