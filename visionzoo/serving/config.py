"""Service settings, all from environment variables (read once, at import), with defaults that
work for `bentoml serve` from the repository root.

| variable | default | meaning |
|---|---|---|
| VISIONZOO_MODELS_DIR | <repo>/exported_models | where exported models live |
| VISIONZOO_<MODEL>_EXPORT | see SERVED | which export folder a served name uses |
| VISIONZOO_<MODEL>_VERSION | newest | pin a version (e.g. VISIONZOO_BLOODCELL_VERSION=2) |
| VISIONZOO_BATCHING | on | off: every request runs alone (for benchmarks) |
| VISIONZOO_MAX_BATCH_SIZE | 32 | adaptive batching: most items per batch (per model: VISIONZOO_<MODEL>_MAX_BATCH_SIZE) |
| VISIONZOO_MAX_LATENCY_MS | 1000 | adaptive batching: latency budget before BentoML sheds with 503 (per model too) |
| VISIONZOO_RUNTIME_THREADS | 4 | concurrent batches across the three models (each model runs one at a time) |
| VISIONZOO_INTRA_OP_THREADS | CPU count | ONNX Runtime threads per session |
| VISIONZOO_DEVICE | auto | auto (CUDA if a GPU works, else CPU), cuda (fail without a GPU) or cpu |
| VISIONZOO_WARMUP_BATCH_SIZES | 1,2,4,8,16,32 | batch sizes run once at start-up (capped at the max batch size) |
| VISIONZOO_MAX_IMAGES | 64 | images per request |
| VISIONZOO_MAX_IMAGE_BYTES | 33554432 | bytes per uploaded file |
| VISIONZOO_GRPC_PORT | 8001 | Open Inference Protocol gRPC port (0 disables gRPC) |
| VISIONZOO_GRPC_MAX_MESSAGE_BYTES | 67108864 | gRPC send/receive message limit |
| VISIONZOO_ADMIN_TOKEN | unset | bearer token for /admin routes; unset disables them |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# served name -> default export folder under VISIONZOO_MODELS_DIR
SERVED = {"mura": "mura_multitask_cnn", "bloodcell": "bloodcell_mobilenetv3", "mars": "mars_dual_unet"}
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _model_int(model: str, setting: str, default: int) -> int:
    return _int(f"VISIONZOO_{model.upper()}_{setting}", _int(f"VISIONZOO_{setting}", default))


@dataclass(frozen=True)
class BatchSettings:
    batchable: bool
    max_batch_size: int
    max_latency_ms: int

    def api_options(self) -> dict:
        """Keyword arguments for @bentoml.api."""
        if not self.batchable:
            return {"batchable": False}
        return {"batchable": True, "batch_dim": 0, "max_batch_size": self.max_batch_size, "max_latency_ms": self.max_latency_ms}


def batch_settings(model: str) -> BatchSettings:
    enabled = os.environ.get("VISIONZOO_BATCHING", "on").lower() not in ("off", "0", "false", "no")
    size = _model_int(model, "MAX_BATCH_SIZE", 32)
    if enabled and size < 2:
        raise ValueError(f"max batch size for {model} must be at least 2 (or set VISIONZOO_BATCHING=off), got {size}")
    return BatchSettings(enabled, size, _model_int(model, "MAX_LATENCY_MS", 1000))


def models_dir() -> Path:
    return Path(os.environ.get("VISIONZOO_MODELS_DIR", REPOSITORY_ROOT / "exported_models"))


def export_name(model: str) -> str:
    return os.environ.get(f"VISIONZOO_{model.upper()}_EXPORT", SERVED[model])


def pinned_version(model: str) -> str | None:
    return os.environ.get(f"VISIONZOO_{model.upper()}_VERSION") or None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def runtime_threads() -> int:
    return _int("VISIONZOO_RUNTIME_THREADS", 4)


def intra_op_threads() -> int:
    return _int("VISIONZOO_INTRA_OP_THREADS", cpu_count())


def device() -> str:
    value = os.environ.get("VISIONZOO_DEVICE", "auto").lower()
    if value not in ("auto", "cuda", "cpu"):
        raise ValueError(f"VISIONZOO_DEVICE must be auto, cuda or cpu, got {value!r}")
    return value


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    text = os.environ.get("VISIONZOO_WARMUP_BATCH_SIZES", "1,2,4,8,16,32")
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"VISIONZOO_WARMUP_BATCH_SIZES must be comma-separated integers, got {text!r}") from None
    return [size for size in sizes if 0 < size <= max_batch_size] or [1]


def max_images() -> int:
    return _int("VISIONZOO_MAX_IMAGES", 64)


def max_image_bytes() -> int:
    return _int("VISIONZOO_MAX_IMAGE_BYTES", 32 * 1024 * 1024)


def grpc_port() -> int:
    return _int("VISIONZOO_GRPC_PORT", 8001)


def grpc_max_message_bytes() -> int:
    return _int("VISIONZOO_GRPC_MAX_MESSAGE_BYTES", 64 * 1024 * 1024)


def admin_token() -> str | None:
    return os.environ.get("VISIONZOO_ADMIN_TOKEN") or None
