"""The CUDA image (`make container-gpu`), checked without a GPU: every CUDA and cuDNN library that
ONNX Runtime's CUDA provider loads resolves inside the image, except the driver's libcuda.so.1,
which the NVIDIA Container Toolkit mounts from the host; ONNX Runtime offers the CUDA provider;
and with no driver present the service falls back to CPU instead of failing.

Skipped unless the image exists (`make container-test` does not build it; run
`make container-gpu` first, or set VISIONZOO_GPU_IMAGE). To test it end to end on CPU, run the
whole container suite against it: VISIONZOO_IMAGE=visionzoo:VERSION-gpu pytest -m container tests/container
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from .conftest import run

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
SITE = "/app/.venv/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def gpu_image() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    name = os.environ.get("VISIONZOO_GPU_IMAGE") or f"visionzoo:{version}-gpu"
    try:
        present = run("image", "inspect", name, check=False).returncode == 0
    except FileNotFoundError:
        present = False
    if not present:
        pytest.skip(f"no image {name}; build it with `make container-gpu`")
    return name


def shell(image: str, script: str) -> str:
    done = run("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cuda_libraries_resolve_except_the_driver(gpu_image):
    ldd = shell(gpu_image, f"ldd {SITE}/onnxruntime/capi/libonnxruntime_providers_cuda.so")
    missing = sorted(line.split()[0] for line in ldd.splitlines() if "not found" in line)
    assert missing == ["libcuda.so.1"], ldd
    cache = shell(gpu_image, "ldconfig -p")
    for library in ("libcudnn.so.9", "libcublasLt.so.13", "libcudart.so.13", "libcufft.so.12", "libnvrtc.so.13"):
        assert library in cache, f"{library} is not in the loader cache"


def test_onnxruntime_offers_cuda_and_the_service_falls_back_to_cpu_without_a_driver(gpu_image):
    probe = ("import json, onnxruntime as ort; from visionzoo.serving.runtime import cuda_usable; "
             "print(json.dumps({'providers': ort.get_available_providers(), 'cuda_usable': cuda_usable(), "
             "'version': ort.__version__}))")
    found = json.loads(shell(gpu_image, f"cd src && python -c \"{probe}\"").strip().splitlines()[-1])
    assert "CUDAExecutionProvider" in found["providers"]
    assert found["cuda_usable"] is False  # no libcuda.so.1 on this machine: CPU, not a crash
    assert f"onnxruntime-gpu=={found['version']}" in (REPO / "visionzoo" / "serving" / "requirements.txt").read_text()
