#!/usr/bin/env bash
# Build the visionzoo OCI image from the Bento: `bentoml build` (bentofile.yaml), then podman (or
# docker) on the Bento's generated Dockerfile with the edits in deploy/containerfile.py.
#
#   deploy/build_image.sh [--gpu] [--models DIR]
#
# Skips the image build when IMAGE:TAG was built from identical inputs (the Bento's sources and
# requirements, the Containerfile, the base image): the image carries their hash as a label.
#
#   --gpu          the CUDA 13 image (tag suffix -gpu): the CPU image plus onnxruntime-gpu[cuda,cudnn]
#   --models DIR   ship the exports under DIR (<export>/<version>/...) instead of exported_models/;
#                  the Bento is then built from a staging copy of the sources
#
# Environment (all optional):
#   IMAGE       image name                          default visionzoo
#   TAG         image tag                           default the version in pyproject.toml (+ -gpu)
#   BASE_IMAGE  base image (needs python 3.11)      default what bentofile.yaml gives: python:3.11-slim
#   ENGINE      podman or docker                    default podman when installed, else docker
#   CA_BUNDLE   CA bundle mounted for the build only, for networks that re-sign TLS (podman only)
#               default $SSL_CERT_FILE when that file exists
#   BENTOML     the bentoml command                 default bentoml (uv must be on PATH too)
#   FORCE       1: build even when the image is up to date
#   KEEP_BENTOS Bentos of this name kept in the local store after a build, newest first (the one just
#               built included; older ones are deleted: deploy/prune_bentos.py)   default 3
# After a build, the visionzoo images left untagged by it (the previous IMAGE:TAG) are pruned.
# Prints the image reference on the last line of stdout.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
GPU=0
MODELS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) GPU=1; shift ;;
        --models) MODELS=$(cd "$2" && pwd); shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "build_image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
BENTOML=${BENTOML:-bentoml}
IMAGE=${IMAGE:-visionzoo}
VERSION=$("$PYTHON" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
SUFFIX=""
[[ $GPU == 1 ]] && SUFFIX=-gpu
TAG=${TAG:-$VERSION$SUFFIX}
ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
CA_BUNDLE=${CA_BUNDLE-${SSL_CERT_FILE:-}}
command -v uv >/dev/null || { echo "build_image.sh: bentoml build needs uv on PATH (pip install uv)" >&2; exit 1; }
export BENTOML_DO_NOT_TRACK=True

work=$(mktemp -d /tmp/visionzoo-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

# 1. The Bento. Its build context is the repository, or a staging copy holding the given exports.
context=$REPO
if [[ -n "$MODELS" ]]; then
    context=$work/context
    mkdir -p "$context"
    mkdir -p "$context/visionzoo"
    cp "$REPO/bentofile.yaml" "$context/"
    cp -r "$REPO/visionzoo/__init__.py" "$REPO/visionzoo/serving" "$REPO/visionzoo/preprocessing" "$context/visionzoo/"
    mkdir -p "$context/exported_models"
    # serving reads ONNX only: leave the SavedModel (TF Serving layout: <version>/saved_model.pb, variables/ ...) out
    tar -C "$MODELS" -c --exclude=saved_model.pb --exclude=fingerprint.pb --exclude=variables --exclude=assets \
        --exclude=saved_model --exclude='.staging-*' . | tar -C "$context/exported_models" -x
fi
(cd "$context" && VISIONZOO_MODELS_DIR=$context/exported_models "$PYTHON" -) <<'EOF'
import sys
from visionzoo.serving import config
from visionzoo.serving.repository import available_versions
missing = [name for name, m in config.served_models().items() if not available_versions(config.server_settings().models_dir, m.export)]
if missing:
    sys.exit(f"build_image.sh: no exported version of {missing} under {config.server_settings().models_dir}; "
             "export them or pass --models DIR (tests use tests/serving/toy_models.py)")
EOF
bento=$(cd "$context" && "$BENTOML" build --output tag . | sed -n 's/^__tag__://p')
[[ -n "$bento" ]] || { echo "build_image.sh: bentoml build did not report a tag" >&2; exit 1; }
bento_dir=$("$BENTOML" get "$bento" -o path)
echo "built Bento $bento at $bento_dir" >&2

# 2. The image, from the Bento's Dockerfile (deploy/containerfile.py says what is changed and why).
gpu_flag=()
[[ $GPU == 1 ]] && gpu_flag=(--gpu)
"$PYTHON" "$REPO/deploy/containerfile.py" "$bento_dir" "${gpu_flag[@]}" > "$work/Containerfile"
base_id=$("$ENGINE" image inspect --format '{{.Id}}' "${BASE_IMAGE:-$("$PYTHON" "$REPO/deploy/containerfile.py" "$bento_dir" --print-base-image)}" 2>/dev/null || true)
inputs=$( (cd "$bento_dir" && find src env -type f -print0 | sort -z | xargs -0 sha256sum; cat "$work/Containerfile"; echo "${BASE_IMAGE:-} $base_id") | sha256sum | cut -c1-32)
current=$("$ENGINE" image inspect --format '{{index .Labels "ai.visionzoo.inputs"}}' "$IMAGE:$TAG" 2>/dev/null || true)
prune_bentos() {  # the Bento store keeps the newest KEEP_BENTOS of this name
    "$PYTHON" "$REPO/deploy/prune_bentos.py" "$bento" --keep "${KEEP_BENTOS:-3}" --bentoml "$BENTOML" >&2 || true
}
if [[ "$current" == "$inputs" && "${FORCE:-0}" != 1 ]]; then
    echo "image $IMAGE:$TAG is up to date (inputs $inputs); FORCE=1 rebuilds it" >&2
    "$BENTOML" delete -y "$bento" >/dev/null 2>&1 || true  # the same Bento is inside the image already
    prune_bentos
    echo "$IMAGE:$TAG"
    exit 0
fi
args=(build -f "$work/Containerfile" -t "$IMAGE:$TAG" --network=host
      --label "org.opencontainers.image.title=visionzoo"
      --label "org.opencontainers.image.version=$VERSION"
      --label "org.opencontainers.image.revision=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
      --label "ai.visionzoo.bento=$bento"
      --label "ai.visionzoo.inputs=$inputs")
if [[ -n "${BASE_IMAGE:-}" ]]; then args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
if [[ -n "$CA_BUNDLE" && -f "$CA_BUNDLE" ]]; then
    if [[ "$ENGINE" == podman ]]; then
        args+=(-v "$CA_BUNDLE:/run/visionzoo-build-ca.crt:ro" --build-arg SSL_CERT_FILE=/run/visionzoo-build-ca.crt)
    else
        echo "build_image.sh: CA_BUNDLE is only passed to podman builds; ignoring it for $ENGINE" >&2
    fi
fi
started=$(date +%s)
"$ENGINE" "${args[@]}" "$bento_dir" >&2
size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE:$TAG")
echo "image $IMAGE:$TAG: $((size / 1000000)) MB, built in $(( $(date +%s) - started )) s (Bento $bento)" >&2
# what each rebuild leaves behind: the image IMAGE:TAG named before (now untagged, with its build-cache
# layers; measured: 11 of them held 132 image entries and 0.9 GB) and the older Bentos in the store
"$ENGINE" image prune -f --filter "label=org.opencontainers.image.title=visionzoo" >/dev/null 2>&1 || true
prune_bentos
echo "$IMAGE:$TAG"
