"""The Bento: `bentoml build` works offline-capable (uv on PATH, no locking), contains the served
models and only the serving code, pins exactly the pyproject `serving` extra, and generates a
Dockerfile. And serving never imports TensorFlow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.serving.toy_models import SERVED_EXPORTS

REPO = Path(__file__).resolve().parents[2]


def serving_extra() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serving"]


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_bento_requirements_are_the_serving_extra():
    assert requirement_lines(REPO / "visionzoo" / "serving" / "requirements.txt") == serving_extra()
    for requirement in serving_extra():
        assert not re.match(r"(tensorflow|tf-keras|tf2onnx|keras)\b", requirement)


def test_serving_never_imports_tensorflow():
    code = "import sys, visionzoo.serving.service, visionzoo.serving.oip; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras') or m.startswith('visionzoo.training')))"
    env = {**os.environ, "VISIONZOO_GRPC_PORT": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    for path in (REPO / "visionzoo" / "serving").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(tensorflow|tf_keras|visionzoo\.training|\.+training)\b", path.read_text(), re.MULTILINE), path


@pytest.fixture(scope="module")
def built_bento(tmp_path_factory, models_dir):
    """`bentoml build` into a private BENTOML_HOME, with uv from the virtual environment."""
    if models_dir != REPO / "exported_models":
        pytest.skip("the Bento ships exported_models/; it does not hold all three served models yet")
    home = tmp_path_factory.mktemp("bentoml-home")
    bin_dir = str(Path(sys.executable).parent)
    if not shutil.which("uv", path=bin_dir):
        pytest.fail("uv is not installed next to the Python running the tests; `pip install -e .[dev]` installs it")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "bentoml", "build", "."], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (bento,) = [p for p in (home / "bentos" / "visionzoo").iterdir() if p.is_dir()]  # beside it: a `latest` file
    return bento


def test_bento_contains_the_served_models_and_no_training_code(built_bento):
    src = built_bento / "src"
    for name in SERVED_EXPORTS:
        versions = sorted((src / "exported_models" / name).iterdir())
        assert versions, name
        for version in versions:
            assert (version / "model.onnx").is_file() and (version / "metadata.json").is_file()
            for saved_model_file in ("saved_model.pb", "fingerprint.pb", "variables", "assets", "saved_model"):
                assert not (version / saved_model_file).exists(), saved_model_file  # serving reads ONNX only
    assert (src / "visionzoo" / "serving" / "service.py").is_file() and (src / "visionzoo" / "preprocessing" / "__init__.py").is_file()
    assert not (src / "visionzoo" / "training").exists() and not (src / "tests").exists() and not (src / "runs").exists()
    manifest = yaml.safe_load((built_bento / "bento.yaml").read_text())
    assert manifest["service"] == "visionzoo.serving.service:VisionZoo"


def test_bento_pins_the_serving_extra_and_generates_a_dockerfile(built_bento):
    requirements = requirement_lines(built_bento / "env" / "python" / "requirements.txt")
    for requirement in serving_extra():
        assert requirement in requirements
    assert not any(line.startswith(("tensorflow", "tf-keras", "tf2onnx")) for line in requirements)
    dockerfile = (built_bento / "env" / "docker" / "Dockerfile").read_text()
    assert "EXPOSE 3000" in dockerfile and "requirements.txt" in dockerfile
