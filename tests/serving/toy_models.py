"""Where serving tests find exported models.

The shipped `exported_models/` is used when it holds all three served models. Otherwise (a fresh
fork without them) small models are exported once from synthetic data into
`~/.cache/visionzoo-test-models` (override with VISIONZOO_TEST_MODELS), in a subprocess so the
test process never imports TensorFlow for this, by the first test process to get there.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "exported_models"
# the export folder each served model reads: models.yaml is the one owner
SERVED_EXPORTS = tuple(entry["export"] for entry in yaml.safe_load(
    (REPO / "visionzoo" / "serving" / "models.yaml").read_text())["models"].values())


def _complete(root: Path) -> bool:
    return all(any((root / name).glob("*/metadata.json")) for name in SERVED_EXPORTS)


def models_root() -> Path:
    if _complete(SHIPPED):
        return SHIPPED
    cache = Path(os.environ.get("VISIONZOO_TEST_MODELS", Path.home() / ".cache" / "visionzoo-test-models"))
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:  # pytest-xdist workers: one exports, the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(cache):
            subprocess.run([sys.executable, "-m", "tests.serving.toy_models", str(cache)], check=True, cwd=REPO)
    return cache


def export_toy_models(out: Path) -> None:
    """Export the three served architectures, briefly fitted on synthetic data, with golden files."""
    import tempfile

    import visionzoo.training  # noqa: F401
    from tests.training.helpers import calibrate_batch_norm
    from visionzoo.training import export
    from visionzoo.training.data import load_data
    from visionzoo.training.data import synthetic as writers
    from visionzoo.training.registry import get_recipe

    work = Path(tempfile.mkdtemp(prefix="visionzoo-toy-data-"))
    synthetic = {"fracatlas": writers.write_fracatlas, "blood_pbc": writers.write_pbc, "ai4mars": writers.write_ai4mars}
    for name in SERVED_EXPORTS:
        recipe = get_recipe(name)
        data_format = next(f for f in recipe.data_formats if f in synthetic)
        source = synthetic[data_format](work / data_format)
        data = load_data(source, recipe.image_spec, recipe.data_formats)
        options = dict(recipe.model_options)
        if "weights" in options:
            options["weights"] = None
        if "fine_tune_from" in options:
            options["fine_tune_from"] = None
        if recipe.num_classes_option:
            option, target = recipe.num_classes_option
            options[option] = len(data.class_names[target])
        model = recipe.builder(input_shape=recipe.image_spec.shape, **options)
        calibrate_batch_norm(model, data.splits["train"].images)
        export.export_model(model, name, out, image_spec=recipe.image_spec, task_kind=recipe.task.kind,
                            output_labels=recipe.task.output_labels(data.class_names), real_examples=data.splits["test"],
                            metadata={"description": f"toy {name} for tests (synthetic data, untrained)"},
                            explain=recipe.explain)


if __name__ == "__main__":
    export_toy_models(Path(sys.argv[1]))
