"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mars_smoke_run(synthetic, tmp_path_factory) -> tuple:
    """`visionzoo train mars_dual_unet --smoke` on the synthetic AN2DL npz with background ignored, run
    once per session: (the finished process, its run folder). The CLI test checks the run and exports
    it; the quantize test exports it into a folder of its own."""
    from tests.training.test_cli import visionzoo

    result = visionzoo("train", "mars_dual_unet", "--smoke", "--data-dir", str(synthetic["mars_npz"]),
                       "--out", str(tmp_path_factory.mktemp("mars_smoke") / "runs"), "--set", "ignore_background=true")
    run = Path(next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("run folder: ")))
    return result, run
