"""benchmarks.bloodcell_tta: its eight views are the eight symmetries of the square, the served
blood-cell model sees a mirrored file's "mirror" view as the original file, and a report on a few
real PBC images compares every candidate with the plain model (benchmarks/bloodcell_tta.json)."""

import json

import numpy as np
import pytest

from benchmarks import bloodcell_tta

pytestmark = pytest.mark.realdata


def test_the_views_are_the_eight_distinct_symmetries():
    image = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
    seen = {bloodcell_tta.view(image, name).tobytes() for name in bloodcell_tta.VIEWS}
    assert len(seen) == 8
    mirrored = bloodcell_tta.view(image, "mirror")
    assert np.array_equal(mirrored[:, :, 0], image[:, :, -1])  # left-right
    assert np.array_equal(bloodcell_tta.view(image, "rot180+mirror"), image[:, ::-1])  # upside down


@pytest.fixture(scope="module")
def report(real_data):
    return bloodcell_tta.run(real_data / "blood_pbc", limit=8)


def test_a_mirrored_upload_is_the_original_seen_in_the_mirror_view(real_data):
    version, engine = bloodcell_tta.load_model(threads=1)
    try:
        listing = bloodcell_tta.blood.list_splits(real_data / "blood_pbc", bloodcell_tta.SPLIT_SEED)["val"]
        images = bloodcell_tta.decode(version, listing.paths[:4])
        as_mirror = engine.run(bloodcell_tta.view(images, "mirror"))[bloodcell_tta.OUTPUT]
        of_mirrored = engine.run(np.ascontiguousarray(images[:, :, ::-1]))[bloodcell_tta.OUTPUT]
    finally:
        engine.close()
    np.testing.assert_allclose(as_mirror, of_mirrored, atol=1e-6)


def test_the_report_compares_each_candidate_with_the_plain_model(report):
    assert set(report["splits"]) == {"val", "test"}
    for split in report["splits"].values():
        assert split["images"] == 8
        plain = split["candidates"]["plain"]
        assert plain["fixed"] == plain["broken"] == 0
        for scores in split["candidates"].values():
            assert set(scores["recall"]) == {"basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
                                             "neutrophil", "platelet"}
            assert 0 <= scores["balanced_accuracy"] <= 1
    assert report["chosen_on_validation"] in bloodcell_tta.CANDIDATES
    json.dumps(report)  # what main writes


def test_the_committed_report_chose_on_validation():
    committed = json.loads(bloodcell_tta.OUT.read_text())
    validation = committed["splits"]["val"]["candidates"]
    best = max(validation.values(), key=lambda c: c["balanced_accuracy"])
    assert validation[committed["chosen_on_validation"]]["balanced_accuracy"] == best["balanced_accuracy"]
