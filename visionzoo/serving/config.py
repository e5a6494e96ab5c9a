"""Service settings: environment variables (parsed and checked by pydantic-settings) over the served
models' manifest (`models.yaml`). Read when the service starts; a bad value stops it with the name.

| variable | default | meaning |
|---|---|---|
| VISIONZOO_MODELS_DIR | <repo>/exported_models | where exported models live |
| VISIONZOO_MANIFEST | visionzoo/serving/models.yaml | the served models (one entry each) |
| VISIONZOO_<MODEL>_EXPORT | the manifest's | which export folder a served name uses |
| VISIONZOO_<MODEL>_VERSION | newest | pin a version (e.g. VISIONZOO_BLOODCELL_VERSION=2) |
| VISIONZOO_<MODEL>_PRECISION | the manifest's (fp32) | fp32, int8 (the export's INT8 variant) or fp16 (CUDA) |
| VISIONZOO_ENGINE | auto | auto (CUDA on a GPU, else the faster of ONNX Runtime and OpenVINO here), onnxruntime or openvino |
| VISIONZOO_DEVICE | auto | auto, cuda (refuse to start without a GPU) or cpu |
| VISIONZOO_ENGINE_CACHE | ~/.cache/visionzoo/engine-choice.json | where the engine race's results are kept per model file, CPU and versions (read by serving/engines); off: race at every start |
| VISIONZOO_INTRA_OP_THREADS | 0 | engine threads per model (0: every core this process may use) |
| VISIONZOO_BATCHING | on | off: every request runs alone (for benchmarks) |
| VISIONZOO_MAX_BATCH_SIZE | 32 | most items (images, tiles) per engine run (per model: VISIONZOO_<MODEL>_MAX_BATCH_SIZE) |
| VISIONZOO_MAX_QUEUE_DELAY_US | 0 | how long an under-full batch waits for more requests (per model too) |
| VISIONZOO_PREFERRED_BATCH_SIZES | none | comma-separated batch sizes to prefer (per model too) |
| VISIONZOO_MAX_QUEUE_SIZE | the manifest's, else 8 x max batch | items waiting per model before requests are refused with 503 (per model too); a batch size set in the environment without a queue size gets 8 x that batch |
| VISIONZOO_QUEUE_TIMEOUT_US | the manifest's, else 2000000 | a request queued longer is refused with 503 (per model too) |
| VISIONZOO_INSTANCES | 1 | engine runs in flight per model (per model too) |
| VISIONZOO_WARMUP_BATCH_SIZES | 1,max | batch sizes run once at start-up (capped at the max batch size) |
| VISIONZOO_MAX_IMAGES | 64 | images per request |
| VISIONZOO_MAX_IMAGE_BYTES | 33554432 | bytes per uploaded file |
| VISIONZOO_MAX_REQUEST_BYTES | 67108864 | bytes per HTTP request body (BentoML endpoints and OIP REST) |
| VISIONZOO_MAX_IMAGE_PIXELS | 40000000 | pixels per image, checked from the header before decoding |
| VISIONZOO_MAX_TILES_PER_IMAGE | 16 | model tiles one image may become (tiled models) |
| VISIONZOO_MAX_TILES_PER_REQUEST | 128 | model inputs (images or tiles) one request may become |
| VISIONZOO_DECODE_THREADS | CPU count | threads that decode uploads (never the event loop) |
| VISIONZOO_GRPC_PORT | 8001 | Open Inference Protocol gRPC port (0 disables gRPC) |
| VISIONZOO_GRPC_HOST | the HTTP host | interface gRPC binds (`bentoml serve --host`; 0.0.0.0 when none given) |
| VISIONZOO_GRPC_REUSE_PORT | off | on: share the gRPC port with other processes (SO_REUSEPORT); off refuses to start when it is taken |
| VISIONZOO_GRPC_MAX_MESSAGE_BYTES | 67108864 | gRPC message limit, both directions, and the OIP REST body limit |
| VISIONZOO_API_KEY | unset | require this key on every inference and model route (Authorization: Bearer, or x-api-key) |
| VISIONZOO_API_KEY_FILE | unset | read the API key from this file (a mounted secret) |
| VISIONZOO_ADMIN_TOKEN | unset | bearer token for /admin routes and the OIP repository API; unset disables them |
| VISIONZOO_ADMIN_TOKEN_FILE | unset | read the admin token from this file |
| VISIONZOO_SYSTEM_SHARED_MEMORY | off | on: clients on this host may pass tensors through POSIX shared memory (Triton's system shared-memory extension; trusted clients only, see serving/oip/shared_memory.py) |
| VISIONZOO_ACCESS_LOG | off | on: one log line per HTTP request (BentoML's access log) |
| VISIONZOO_TRACING | off | on: an OpenTelemetry span per HTTP request (configure the exporter in BentoML's tracing settings) |
| VISIONZOO_SHUTDOWN_GRACE_SECONDS | 20 | on SIGTERM, how long requests in flight may take to finish |
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from .batcher import BatcherSettings

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(__file__).with_name("models.yaml")
PRECISIONS = ("fp32", "int8", "fp16")


class ConfigError(ValueError):
    """A setting the service refuses; the message names the variable and what it accepts."""


def _flag(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in ("on", "off"):
        return value.strip().lower() == "on"
    return value


def _sizes(value: object) -> object:
    if isinstance(value, str):
        return tuple(int(part) for part in value.split(",") if part.strip())
    return value


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ServerSettings(BaseSettings):
    """Server-wide settings: VISIONZOO_<FIELD> (see the table above)."""

    model_config = SettingsConfigDict(env_prefix="VISIONZOO_", extra="ignore", case_sensitive=False)

    models_dir: Path = REPOSITORY_ROOT / "exported_models"
    manifest: Path = MANIFEST
    engine: Literal["auto", "onnxruntime", "openvino"] = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    intra_op_threads: int = Field(0, ge=0)
    batching: bool = True
    warmup_batch_sizes: Annotated[tuple[int, ...], NoDecode] = ()
    max_images: int = Field(64, ge=1)
    max_image_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_tiles_per_image: int = Field(16, ge=1)
    max_tiles_per_request: int = Field(128, ge=1)
    decode_threads: int = Field(0, ge=0)
    grpc_port: int = Field(8001, ge=0, le=65535)
    grpc_host: str = ""
    grpc_reuse_port: bool = False
    grpc_max_message_bytes: int = Field(64 * 1024 * 1024, ge=-1)
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    system_shared_memory: bool = False
    access_log: bool = False
    tracing: bool = False
    shutdown_grace_seconds: float = Field(20.0, ge=0)

    _flags = field_validator("batching", "grpc_reuse_port", "system_shared_memory", "access_log", "tracing",
                             mode="before")(_flag)
    _sizes = field_validator("warmup_batch_sizes", mode="before")(_sizes)

    def warmup_sizes(self, max_batch_size: int) -> list[int]:
        """The batch sizes a model of this largest batch compiles and runs before it is ready:
        warmup_batch_sizes up to max_batch_size, else 1 and max_batch_size."""
        sizes = self.warmup_batch_sizes or (1, max_batch_size)
        return sorted({size for size in sizes if 0 < size <= max_batch_size}) or [1]

    @field_validator("api_key", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _secret_files(self) -> ServerSettings:
        for name in ("api_key", "admin_token"):
            path = getattr(self, f"{name}_file")
            if path is not None and getattr(self, name) is None:
                try:
                    text = Path(path).read_text().strip()
                except OSError as error:
                    raise ValueError(f"VISIONZOO_{name.upper()}_FILE={path}: cannot read it ({error.strerror})") from None
                if not text:
                    raise ValueError(f"VISIONZOO_{name.upper()}_FILE={path} is empty")
                setattr(self, name, SecretStr(text))
        return self

    @property
    def decode_workers(self) -> int:
        return self.decode_threads or cpu_count()


class BatchingEntry(BaseModel):
    """A manifest entry's `batching` block (any field may be omitted)."""

    model_config = {"extra": "forbid"}

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_size: int | None = None
    queue_timeout_us: int | None = None
    instances: int | None = None


class ManifestEntry(BaseModel):
    """One served model as models.yaml declares it."""

    model_config = {"extra": "forbid"}

    export: str
    summary: str = ""
    precision: Literal["fp32", "int8", "fp16"] = "fp32"
    version: str | None = None
    batching: BatchingEntry = BatchingEntry()


class Manifest(BaseModel):
    models: dict[str, ManifestEntry]

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict) -> dict:
        for name in models:
            if not name.isidentifier() or name != name.lower():
                raise ValueError(f"served name {name!r} must be a lower-case identifier (it names routes and API methods)")
        if not models:
            raise ValueError("the manifest serves no models")
        return models


class _ModelOverrides(BaseSettings):
    """VISIONZOO_<MODEL>_<SETTING> over VISIONZOO_<SETTING>: the environment's say on one model."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    export: str | None = None
    version: str | None = None
    precision: Literal["fp32", "int8", "fp16"] | None = None
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: Annotated[tuple[int, ...] | None, NoDecode] = None
    max_queue_size: int | None = None
    queue_timeout_us: int | None = None
    instances: int | None = None

    _sizes = field_validator("preferred_batch_sizes", mode="before")(_sizes)

    @field_validator("version", "export", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,)


class ModelSettings(BaseModel):
    """Everything the server decides about one served model."""

    name: str
    export: str
    summary: str
    precision: str
    version: str | None
    batcher: BatcherSettings


def _model_settings(name: str, entry: ManifestEntry, server: ServerSettings) -> ModelSettings:
    common = _ModelOverrides(_env_prefix="VISIONZOO_")
    own = _ModelOverrides(_env_prefix=f"VISIONZOO_{name.upper()}_")
    batching, from_environment = {}, set()
    for field in BatchingEntry.model_fields:
        value = next((v for v in (getattr(own, field), getattr(common, field)) if v is not None), None)
        if value is not None:
            from_environment.add(field)
        else:
            value = getattr(entry.batching, field)
        if value is not None:
            batching[field] = value
    if "max_batch_size" in from_environment and "max_queue_size" not in from_environment:
        batching.pop("max_queue_size", None)  # the manifest's queue was sized for its batch: follow the new one
    size = batching.get("max_batch_size", BatcherSettings.max_batch_size)
    batching.setdefault("max_queue_size", 8 * size)  # the same queue with batching off: only batches change
    if not server.batching:
        batching.update(max_batch_size=1, preferred_batch_sizes=(), max_queue_delay_us=0)
    try:
        batcher = BatcherSettings(**batching)
    except ValueError as error:
        raise ConfigError(f"batching of {name!r}: {error} (models.yaml or VISIONZOO_{name.upper()}_*)") from None
    return ModelSettings(name=name, export=own.export or entry.export, summary=entry.summary,
                         precision=own.precision or entry.precision, version=own.version or entry.version,
                         batcher=batcher)


@functools.cache
def server_settings() -> ServerSettings:
    try:
        return ServerSettings()
    except ValidationError as error:
        raise ConfigError(_explain(error, "VISIONZOO_")) from None


@functools.cache
def served_models() -> dict[str, ModelSettings]:
    """served name -> settings, in manifest order."""
    server = server_settings()
    try:
        manifest = Manifest.model_validate(yaml.safe_load(Path(server.manifest).read_text()))
    except OSError as error:
        raise ConfigError(f"VISIONZOO_MANIFEST={server.manifest}: cannot read it ({error.strerror})") from None
    except (ValidationError, yaml.YAMLError) as error:
        raise ConfigError(f"{server.manifest}: {error}") from None
    try:
        return {name: _model_settings(name, entry, server) for name, entry in manifest.models.items()}
    except ValidationError as error:
        raise ConfigError(_explain(error, "VISIONZOO_<MODEL>_")) from None


def reload() -> None:
    """Forget the settings read so far (tests change the environment between cases)."""
    server_settings.cache_clear()
    served_models.cache_clear()


def _explain(error: ValidationError, prefix: str) -> str:
    parts = []
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "settings"
        parts.append(f"{prefix}{field.upper()}: {problem['msg']}")
    return "; ".join(parts)

