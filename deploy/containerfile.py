"""Turn the Dockerfile that `bentoml build` writes into the visionzoo CPU or GPU Containerfile.

The Bento's generated Dockerfile (bento v2, `env/docker/Dockerfile`) is used as it is, with four
edits, each checked so that a BentoML upgrade that changes the generated text fails loudly here
instead of building something else:

1. The base image becomes a build argument (`--build-arg BASE_IMAGE=...`), defaulting to the one
   bentofile.yaml resolves to (python:3.11-slim), so tests can build on a local Debian base.
2. `SSL_CERT_FILE` is declared as a build argument: where a network re-signs TLS, the build can
   mount a CA bundle and point uv at it; nothing of it stays in the image.
3. BentoML's default system packages (build-essential, git, gnupg2: about 250 MB) are cut to
   ca-certificates and bash: every serving requirement is a binary wheel, nothing is compiled.
4. The OIP gRPC port (VISIONZOO_GRPC_PORT, 8001) is exposed beside HTTP 3000.

With `gpu=True` a last layer adds ONNX Runtime's CUDA 13 and cuDNN 9 libraries from its pip extras
(`onnxruntime-gpu[cuda,cudnn]`, the version pinned in visionzoo/serving/requirements.txt; BentoML's
`cuda_version` stops at CUDA 12.8) and registers their folders with the dynamic loader, since the
CUDA provider library carries no RPATH to find them.

    python deploy/containerfile.py BENTO_DIR [--gpu] > Containerfile
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

GRPC_PORT = 8001  # visionzoo.serving.config.grpc_port() default; tests/deploy checks they agree
BENTOML_SYSTEM_PACKAGES = "--allow-remove-essential ca-certificates gnupg2 bash build-essential git"
SLIM_SYSTEM_PACKAGES = "ca-certificates bash"

FROM_LINE = re.compile(r"^FROM (?P<image>\S+) AS base-container$", re.MULTILINE)
INSTALL_LINE = re.compile(r"^RUN apt-get update && apt-get install (?P<options>.*?)" + re.escape(BENTOML_SYSTEM_PACKAGES) + "$", re.MULTILINE)
HTTP_EXPOSE = re.compile(r"^EXPOSE 3000$", re.MULTILINE)
LAST_USER = re.compile(r"^USER (?P<user>\S+)$", re.MULTILINE)
ORT_PIN = re.compile(r"^onnxruntime-gpu(\[[^\]]*\])?==(?P<version>\S+)", re.MULTILINE)


class UnexpectedDockerfile(ValueError):
    """The generated Dockerfile no longer looks like BentoML 1.4's bento v2 template."""


def _replace_once(pattern: re.Pattern, text: str, replacement, what: str) -> str:
    result, count = pattern.subn(replacement, text, count=1)
    if count != 1:
        raise UnexpectedDockerfile(f"cannot find {what} in the generated Dockerfile (pattern {pattern.pattern!r})")
    return result


def default_base_image(dockerfile: str) -> str:
    match = FROM_LINE.search(dockerfile)
    if match is None:
        raise UnexpectedDockerfile(f"no 'FROM ... AS base-container' line (pattern {FROM_LINE.pattern!r})")
    return match["image"]


def onnxruntime_version(requirements: str) -> str:
    """The onnxruntime-gpu version pinned in the Bento's requirements."""
    match = ORT_PIN.search(requirements)
    if match is None:
        raise UnexpectedDockerfile("the Bento's requirements pin no onnxruntime-gpu==VERSION")
    return match["version"]


def gpu_layer(version: str, user: str) -> str:
    return "\n".join([
        "",
        "# GPU: CUDA 13 + cuDNN 9 from ONNX Runtime's pip extras; the driver comes from the host",
        "# (nvidia-container-toolkit: --gpus all, or CDI --device nvidia.com/gpu=all).",
        "USER root",
        f'RUN uv pip install --python /app/.venv/bin/python "onnxruntime-gpu[cuda,cudnn]=={version}" \\',
        "    && find /app/.venv -path '*/site-packages/nvidia/*/lib' -type d > /etc/ld.so.conf.d/onnxruntime-cuda.conf \\",
        "    && test -s /etc/ld.so.conf.d/onnxruntime-cuda.conf && ldconfig",
        "ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        f"USER {user}",
        "",
    ])


def patch(dockerfile: str, requirements: str = "", gpu: bool = False) -> str:
    """The visionzoo Containerfile from BentoML's generated Dockerfile (see the module docstring)."""
    base = default_base_image(dockerfile)
    text = _replace_once(
        FROM_LINE, dockerfile,
        f"ARG BASE_IMAGE={base}\nFROM ${{BASE_IMAGE}} AS base-container\n"
        "# Build-time only: a CA bundle for networks that re-sign TLS (see deploy/build_image.sh).\nARG SSL_CERT_FILE",
        "the base image line",
    )
    text = _replace_once(
        INSTALL_LINE, text,
        lambda m: f"RUN apt-get update && apt-get install {m['options']}{SLIM_SYSTEM_PACKAGES} && rm -rf /var/lib/apt/lists/*",
        "BentoML's default system packages",
    )
    text = _replace_once(HTTP_EXPOSE, text, f"EXPOSE 3000\n\n# Open Inference Protocol gRPC (VISIONZOO_GRPC_PORT)\nEXPOSE {GRPC_PORT}", "EXPOSE 3000")
    if gpu:
        users = LAST_USER.findall(text)
        if not users:
            raise UnexpectedDockerfile("no USER line in the generated Dockerfile")
        text = text.rstrip("\n") + "\n" + gpu_layer(onnxruntime_version(requirements), users[-1])
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bento_dir", type=Path, help="a built Bento (bentoml get TAG -o path)")
    parser.add_argument("--gpu", action="store_true", help="add the CUDA 13 layer")
    parser.add_argument("--print-base-image", action="store_true", help="print the default base image and exit")
    args = parser.parse_args(argv)
    dockerfile = (args.bento_dir / "env" / "docker" / "Dockerfile").read_text()
    if args.print_base_image:
        print(default_base_image(dockerfile))
        return 0
    requirements = (args.bento_dir / "env" / "python" / "requirements.txt").read_text()
    sys.stdout.write(patch(dockerfile, requirements, gpu=args.gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
