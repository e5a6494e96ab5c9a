"""deploy/containerfile.py on the Dockerfile BentoML generates from our bentofile.yaml (rendered as
`bentoml build` renders it, without building): the base image is a build argument defaulting to
python:3.11-slim, no compilers, both ports exposed, CUDA only in the GPU variant, nothing of a
build-time CA bundle left in the image, and a loud failure when BentoML's template changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.containerfile import UnexpectedDockerfile, onnxruntime_version, patch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[str, str]:
    """(Dockerfile, requirements) as `bentoml build` writes them for bentofile.yaml."""
    from _bentoml_impl.docker import generate_dockerfile
    from _bentoml_sdk.images import populate_image_from_build_config
    from bentoml._internal.bento.bento import ImageInfo
    from bentoml._internal.bento.build_config import BentoBuildConfig
    from bentoml._internal.container import split_envs_by_stage

    with (REPO / "bentofile.yaml").open() as handle:
        build_config = BentoBuildConfig.from_yaml(handle)
    image = populate_image_from_build_config(None, build_config, str(REPO))
    info = ImageInfo(base_image=image.base_image, python_version=image.python_version, commands=image.commands,
                     python_requirements=image.python_requirements, post_commands=image.post_commands,
                     build_include=image.build_include_paths)
    runtime_envs, build_envs = split_envs_by_stage(build_config.envs)
    dockerfile = generate_dockerfile(info, tmp_path_factory.mktemp("bento"), enable_buildkit=bool(build_envs),
                                     envs=runtime_envs, secret_envs=build_envs)
    return dockerfile, image.python_requirements


def test_cpu_containerfile(generated):
    dockerfile, requirements = generated
    text = patch(dockerfile, requirements)
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE} AS base-container" in text
    assert re.search(r"^ARG SSL_CERT_FILE$", text, re.MULTILINE)
    assert not re.search(r"^ENV .*SSL_CERT_FILE", text, re.MULTILINE), "a build-time CA must not stay in the image"
    assert "build-essential" not in text and "apt-get install -q -y --no-install-recommends ca-certificates bash" in text
    assert {"3000", "8001"} <= set(re.findall(r"^EXPOSE (\d+)$", text, re.MULTILINE))
    assert "cuda" not in text.lower()
    assert re.findall(r"^USER (\S+)$", text, re.MULTILINE)[-1] == "bentoml"


def test_gpu_containerfile_adds_cuda_13_from_the_pinned_onnxruntime(generated):
    dockerfile, requirements = generated
    cpu, gpu = patch(dockerfile, requirements), patch(dockerfile, requirements, gpu=True)
    assert gpu.startswith(cpu.rstrip("\n"))  # the CPU image's layers, then one more
    pinned = onnxruntime_version((REPO / "visionzoo" / "serving" / "requirements.txt").read_text())
    assert f'"onnxruntime-gpu[cuda,cudnn]=={pinned}"' in gpu
    assert "ldconfig" in gpu and re.findall(r"^USER (\S+)$", gpu, re.MULTILINE)[-1] == "bentoml"


def test_the_image_installs_the_serving_requirements_without_tensorflow(generated):
    _, requirements = generated
    assert requirements.strip() == (REPO / "visionzoo" / "serving" / "requirements.txt").read_text().strip()
    assert not re.search(r"^(tensorflow|tf-keras|tf2onnx)\b", requirements, re.MULTILINE | re.IGNORECASE)


def test_an_unexpected_dockerfile_fails_loudly(generated):
    dockerfile, requirements = generated
    for broken in (dockerfile.replace(" AS base-container", ""), dockerfile.replace("build-essential", "gcc"),
                   dockerfile.replace("EXPOSE 3000", "EXPOSE 8080")):
        with pytest.raises(UnexpectedDockerfile):
            patch(broken, requirements)
    with pytest.raises(UnexpectedDockerfile):
        patch(dockerfile, "numpy\n", gpu=True)
