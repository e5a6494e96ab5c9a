"""The in-process Python API (`visionzoo.load`, visionzoo/api.py) and `visionzoo predict`: the same
answers as the BentoML endpoints for the same files, every input kind, errors, and no TensorFlow or
BentoML imported on the way."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visionzoo
from tests.serving.conftest import fresh_asgi, wait_ready  # sets the serving test environment first
from tests.serving.toy_models import models_root
from visionzoo import api
from visionzoo.serving.errors import UnsupportedMedia
from visionzoo.serving.repository import load_served

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = models_root()


def golden_files(name: str) -> list[Path]:
    version = load_served(name)
    return [version.folder / "golden" / f for f in version.metadata.get("golden", {}).get("files", [])]


@pytest.fixture(scope="module")
def models():
    loaded = {name: visionzoo.load(name, models_dir=MODELS_DIR, engine="onnxruntime") for name in ("bloodcell", "mura", "mars")}
    yield loaded
    for model in loaded.values():
        model.close()


@pytest.fixture(scope="module")
def client():
    from starlette.testclient import TestClient

    from visionzoo.serving.service import VisionZoo

    with TestClient(fresh_asgi(VisionZoo)) as test_client:
        wait_ready(test_client)
        yield test_client


def upload(paths):
    return [("images", (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]


def assert_same_answer(ours: dict, theirs: dict) -> None:
    """Equal JSON bodies, floats to 1e-6 (the same pipeline, batch and engine compute both)."""
    ours = json.loads(json.dumps(ours))  # what the endpoint's JSONResponse does to the dict

    def compare(a, b, where="body"):
        assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, where
        if isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                compare(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                compare(x, y, f"{where}[{i}]")
        elif isinstance(a, float):
            assert a == pytest.approx(b, abs=1e-6), where
        else:
            assert a == b, where

    compare(ours, theirs)


def test_bloodcell_predict_equals_the_service(models, client):
    files = golden_files("bloodcell")
    assert files
    ours = models["bloodcell"].predict(files, top_k=3)
    response = client.post("/bloodcell/predict", files=upload(files), data={"top_k": "3"})
    assert response.status_code == 200, response.text
    theirs = response.json()
    assert_same_answer(ours, theirs)
    assert [p["label"] for p in ours["predictions"]] == [p["label"] for p in theirs["predictions"]]
    assert [p["file"] for p in ours["predictions"]] == [f.name for f in files]
    version = load_served("bloodcell")
    assert ours["model"] == {"name": "bloodcell", "export": version.export_name, "version": version.version}


def test_mura_predict_and_study_equal_the_service(models, client):
    files = golden_files("mura")[:3]
    mura = models["mura"]
    assert_same_answer(mura.predict(files), client.post("/mura/predict", files=upload(files)).json())
    study = mura.predict_study(files)
    assert_same_answer(study, client.post("/mura/predict_study", files=upload(files)).json())
    assert len(study["views"]) == len(files) and study["label"] in ("normal", "abnormal")


def test_mars_predict_is_segment_with_overlay(models, client):
    (path, *_) = golden_files("mars")
    mars = models["mars"]
    body = mars.predict(path, overlay=True)
    (segmentation,) = body["segmentations"]
    assert segmentation["file"] == path.name and segmentation["overlay_png"] and segmentation["mask_png"]
    assert sum(segmentation["class_fractions"].values()) == pytest.approx(1.0, abs=1e-3)
    with Image.open(path) as frame:
        assert (segmentation["width"], segmentation["height"]) == frame.size
    theirs = client.post("/mars/segment", files=upload([path]), data={"mask_format": "npy"}).json()
    assert_same_answer(mars.segment([path], mask_format="npy"), theirs)


def test_a_call_waits_for_its_own_images_where_a_server_would_refuse_them(monkeypatch):
    """The queue timeout sheds a server's load; in this process the caller's own images all run. With a
    1 µs timeout a server refuses every Mars tile queued behind another (batch size 1); here none is."""
    monkeypatch.setenv("VISIONZOO_MARS_QUEUE_TIMEOUT_US", "1")
    monkeypatch.setenv("VISIONZOO_MARS_MAX_QUEUE_SIZE", "1")
    frames = golden_files("mars")[:3]
    with visionzoo.load("mars", models_dir=MODELS_DIR, engine="onnxruntime") as mars:
        body = mars.predict(frames)
    assert [item["file"] for item in body["segmentations"]] == [path.name for path in frames]


def test_load_takes_the_warm_up_sizes_set_when_it_is_called(monkeypatch, caplog):
    """Like every other VISIONZOO_* setting, not the service's settings cached at their first use."""
    from visionzoo.serving import config

    config.server_settings()  # cached with the serving tests' sizes, 1 and 4
    monkeypatch.setenv("VISIONZOO_WARMUP_BATCH_SIZES", "2")
    with caplog.at_level(logging.INFO, logger="visionzoo"):
        visionzoo.load("bloodcell", models_dir=MODELS_DIR, engine="onnxruntime").close()
    assert "warmed in" in caplog.text and "for batch sizes [2]" in caplog.text


def test_load_warms_the_sizes_it_is_given_and_races_the_engines_at_the_servers(monkeypatch, caplog, tmp_path):
    """`visionzoo predict` on one file warms batch 1 alone; the engine race, run once per machine, still
    times the server's sizes (1 and 4 in these tests) and files its choice where a server looks for it."""
    cache = tmp_path / "engine-choice.json"
    monkeypatch.setenv("VISIONZOO_ENGINE_CACHE", str(cache))
    with (caplog.at_level(logging.INFO, logger="visionzoo"),
          visionzoo.load("bloodcell", models_dir=MODELS_DIR, engine="auto", device="cpu", warmup_batch_sizes=(1,)) as model):
        raced = model.status()
    assert "for batch sizes [1]" in caplog.text and raced["chosen_by"] == "the faster on this CPU (race at start-up)"
    (key,) = json.loads(cache.read_text())
    assert "|sizes=1,4|" in key
    caplog.clear()
    with (caplog.at_level(logging.INFO, logger="visionzoo"),
          visionzoo.load("bloodcell", models_dir=MODELS_DIR, engine="auto", device="cpu", warmup_batch_sizes=(1, 500)) as model):
        cached = model.status()
    assert cached["chosen_by"] == "the faster on this CPU (cached race)" and cached["engine"] == raced["engine"]
    assert "for batch sizes [1, 32]" in caplog.text  # a size over the largest batch (32) means the largest
    with pytest.raises(ValueError, match="warmup_batch_sizes must be positive integers, got \\(0,\\)"):
        visionzoo.load("bloodcell", models_dir=MODELS_DIR, warmup_batch_sizes=(0,))


def test_every_input_kind_gives_the_same_answer(models):
    path = golden_files("bloodcell")[0]
    model = models["bloodcell"]
    expected = model.predict([path])["predictions"][0]
    with Image.open(path) as image:
        image.load()
        pil = image.copy()
    pixels = np.asarray(pil.convert("RGB"))
    for given in (str(path), path.read_bytes(), pil, [pixels]):
        prediction = model.predict(given)["predictions"][0]
        assert prediction["label"] == expected["label"], type(given)
    # bytes of a lossless copy, and the array, are the same pixels: the same probabilities as the PNG
    png = io.BytesIO()
    pil.convert("RGB").save(png, format="PNG")
    from_png = model.predict(png.getvalue())["predictions"][0]
    from_array = model.predict(pixels)["predictions"][0]
    assert from_array["probabilities"] == pytest.approx(from_png["probabilities"], abs=1e-6)
    assert from_array["file"] == "images[0]"
    batch = model.predict(np.stack([pixels, pixels]))  # (N, H, W, C): one image each, as a .npy upload
    assert len(batch["predictions"]) == 2


def test_errors_name_the_problem(models, tmp_path):
    with pytest.raises(api.UnknownModel, match="served models: mura, bloodcell, mars"):
        visionzoo.load("nope", models_dir=MODELS_DIR)
    model = models["bloodcell"]
    with pytest.raises(api.ServingError, match="top_k must be between 1 and"):  # the service's InvalidInput (400)
        model.predict(golden_files("bloodcell")[:1], top_k=100)
    with pytest.raises(ValueError, match="top_k"):
        model.predict(golden_files("bloodcell")[:1], top_k="many")
    with pytest.raises(ValueError, match="colour"):
        model.predict(golden_files("bloodcell")[:1], colour=True)
    with pytest.raises(ValueError, match="no 'predict_study'"):
        model.predict_study(golden_files("bloodcell")[:1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(UnsupportedMedia, match="broken.jpg"):
        model.predict(broken)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        model.predict(tmp_path / "missing.jpg")


def test_close_and_context_manager():
    with visionzoo.load("bloodcell", models_dir=MODELS_DIR, engine="onnxruntime", version="1"
                        if (MODELS_DIR / "bloodcell_mobilenetv3" / "1").is_dir() else None) as model:
        assert model.task == "classification" and "predict" in model.endpoints
    with pytest.raises(RuntimeError, match="closed"):
        model.predict(golden_files("bloodcell")[:1])
    model.close()  # idempotent


def _run(code: str, *args: str, engine: str | None = "onnxruntime") -> subprocess.CompletedProcess:
    """`code` in a new interpreter with `args`; `engine` None leaves VISIONZOO_ENGINE unset."""
    env = {**os.environ, "VISIONZOO_MODELS_DIR": str(MODELS_DIR), "VISIONZOO_ENGINE": engine}
    if engine is None:
        del env["VISIONZOO_ENGINE"]
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_import_and_load_import_neither_tensorflow_nor_bentoml():
    result = _run("import sys, visionzoo\n"
                  "assert not {'tensorflow', 'bentoml'} & set(sys.modules), 'import'\n"
                  "m = visionzoo.load('bloodcell')\n"
                  "m.predict(sys.argv[1])\n"
                  "m.close()\n"
                  "print(sorted({'tensorflow', 'bentoml', 'keras'} & set(sys.modules)))", str(golden_files("bloodcell")[0]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


CLI = ("import sys\n"
       "from visionzoo.training.__main__ import main\n"
       "code = main(sys.argv[1:])\n"
       "print('TF' if 'tensorflow' in sys.modules else 'noTF', file=sys.stderr)\n"
       "sys.exit(code)")


def test_cli_predict_prints_the_label_per_image_without_tensorflow(models):
    files = golden_files("bloodcell")
    expected = models["bloodcell"].predict(files, top_k=2)["predictions"]
    result = _run(CLI, "predict", "bloodcell", *map(str, files), "--top-k", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "noTF"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(files)
    for line, prediction in zip(lines, expected):
        file, label, *_ = line.split("\t")
        assert file == prediction["file"] and label.split()[0] == prediction["label"]
        assert f"{prediction['probability']:.3f}" in label


def test_cli_predict_json_mura_and_mars():
    mura = golden_files("mura")[:2]
    result = _run(CLI, "--verbose", "predict", "mura", *map(str, mura), "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["model"]["name"] == "mura" and len(body["predictions"]) == 2
    assert "for batch sizes [1, 2]" in result.stderr  # the batches this call makes, not the server's sizes
    result = _run(CLI, "predict", "mars", str(golden_files("mars")[0]))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith(golden_files("mars")[0].name) and "x" in line.split("\t")[1]


def test_cli_predict_runs_on_the_engine_that_starts_soonest(tmp_path):
    """Not the server's throughput race (OpenVINO wins it for the blood-cell model here) unless asked."""
    cell = str(golden_files("bloodcell")[0])
    result = _run(CLI, "--verbose", "predict", "bloodcell", cell, engine=None)
    assert result.returncode == 0, result.stderr
    assert "on onnxruntime/cpu" in result.stderr and "race" not in result.stderr
    result = _run(CLI, "--verbose", "predict", "bloodcell", cell, "--engine", "openvino", engine=None)
    assert result.returncode == 0, result.stderr
    assert "on openvino/cpu" in result.stderr


def test_cli_predict_errors_are_one_line(tmp_path):
    result = _run(CLI, "predict", "nope", str(golden_files("bloodcell")[0]))
    assert result.returncode == 2
    (message, *_) = result.stderr.strip().splitlines()
    assert message == "visionzoo predict: error: unknown model 'nope'; served models: mura, bloodcell, mars"
    result = _run(CLI, "predict", "bloodcell", str(tmp_path / "missing.jpg"))
    assert result.returncode == 2 and "missing.jpg: no such file" in result.stderr.splitlines()[0]
    unreadable = tmp_path / "notes.txt"
    unreadable.write_text("hello")
    result = _run(CLI, "--verbose", "predict", "bloodcell", str(unreadable))
    assert result.returncode == 2
    first = result.stderr.strip().splitlines()[0]
    assert first == "visionzoo predict: error: notes.txt: not an image format Pillow can read"
    assert "loaded and warmed" not in result.stderr  # refused before the model loads


def test_readme_examples_without_a_server_run_as_written(tmp_path):
    """The README's "Run a model without a server" examples, shell and Python, from the repository root."""
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "README.md").read_text()
    body = re.split(r"\n## ", text.split("\n## Run a model without a server\n", 1)[1], maxsplit=1)[0]
    shell = re.findall(r"```bash\n(.*?)```", body, flags=re.DOTALL)
    (python,) = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    heatmap = repo / "heatmaps" / "MO_946848.heatmap.png"  # what the --explain example writes
    assert not heatmap.parent.exists(), "a heatmaps/ folder is in the way of the README example"
    for code in shell:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "basophil" in done.stdout and '"segmentations"' in done.stdout
    written = heatmap.is_file() and heatmap.read_bytes().startswith(b"\x89PNG")
    shutil.rmtree(heatmap.parent, ignore_errors=True)
    assert written
    done = subprocess.run([sys.executable, "-c", python], cwd=repo, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "basophil"
