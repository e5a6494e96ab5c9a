"""ONNX Runtime sessions: one per served model, CUDA when a GPU really works, CPU otherwise.

`ModelSlots` holds the live model of each served name and swaps versions atomically: a new
version is loaded, verified and warmed beside the old one, then one reference assignment makes
it live, so requests in flight finish on the version they started with. The previous version
is kept for rollback.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from . import config
from .repository import ModelUnavailable, ModelVersion, load_version

logger = logging.getLogger("visionzoo.runtime")
ort.set_default_logger_severity(3)  # errors only: converted TF graphs trigger harmless deprecation warnings

DTYPES = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64}


def cuda_usable() -> bool:
    """True when ONNX Runtime offers CUDA *and* an NVIDIA driver is present (onnxruntime-gpu lists
    the CUDA provider on machines without a GPU, then fails noisily when a session asks for it)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = config.intra_op_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # Do not busy-spin between runs: several sessions share a few cores (onnxruntime#22967).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(path, device: str | None = None) -> ort.InferenceSession:
    """A session on CUDA if asked or available, verified to really run there; else CPU."""
    device = device or config.device()
    if device in ("auto", "cuda") and cuda_usable():
        cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"})
        session = ort.InferenceSession(str(path), session_options(), providers=[cuda, "CPUExecutionProvider"])
        if session.get_providers()[0] == "CUDAExecutionProvider":
            return session
        logger.warning("CUDAExecutionProvider did not initialise for %s; falling back to CPU", path)
    if device == "cuda":
        raise ModelUnavailable(f"VISIONZOO_DEVICE=cuda but CUDA is not usable here (providers: {ort.get_available_providers()})")
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


@dataclass
class LoadedModel:
    """A verified version with its session; `run` takes and returns arrays keyed by tensor name."""

    version: ModelVersion
    session: ort.InferenceSession
    warmup_seconds: float = 0.0

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [output["name"] for output in self.version.outputs]
        return dict(zip(names, self.session.run(names, inputs)))

    def warm_up(self, batch_sizes: list[int]) -> None:
        """Run each expected batch size once, so the first real requests do not pay for kernel
        selection and memory-arena growth."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        for size in batch_sizes:
            feed = {}
            for tensor in self.version.inputs:
                shape = (size, *tensor["shape"][1:])
                feed[tensor["name"]] = rng.uniform(0, 255, size=shape).astype(DTYPES[tensor["datatype"]])
            self.run(feed)
        self.warmup_seconds = time.perf_counter() - started


def load(served_as: str, version: str | None = None, warmup_sizes: list[int] | None = None) -> LoadedModel:
    found = load_version(served_as, version)
    session = create_session(found.onnx_path)
    model = LoadedModel(found, session)
    model.warm_up(warmup_sizes or [1])
    logger.info("%s: serving %s version %s on %s (warm-up %.2fs for batch sizes %s)", served_as, found.export_name,
                found.version, model.provider, model.warmup_seconds, warmup_sizes or [1])
    return model


@dataclass
class ModelSlots:
    """The live model per served name, the previous one for rollback, and why a model is refused."""

    live: dict[str, LoadedModel] = field(default_factory=dict)
    previous: dict[str, LoadedModel] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load_all(cls, names=tuple(config.SERVED)) -> "ModelSlots":
        slots = cls()
        for name in names:
            try:
                slots.live[name] = load(name, warmup_sizes=config.warmup_batch_sizes(config.batch_settings(name).max_batch_size))
            except ModelUnavailable as error:
                slots.refused[name] = str(error)
                logger.error("refusing to serve %s: %s", name, error)
        return slots

    def get(self, name: str) -> LoadedModel:
        model = self.live.get(name)
        if model is None:
            raise ModelUnavailable(self.refused.get(name, f"unknown model {name!r}; served models: {sorted(config.SERVED)}"))
        return model

    def swap(self, name: str, version: str | None) -> LoadedModel:
        """Load `version` (newest when None) beside the live one, then make it live."""
        with self.lock:  # one swap at a time; inference never takes this lock
            current = self.live.get(name)
            candidate = load(name, version, config.warmup_batch_sizes(config.batch_settings(name).max_batch_size))
            if current is not None and candidate.version.signature() != current.version.signature():
                raise ModelUnavailable(
                    f"{name}: version {candidate.version.version} changes the input/output signature, preprocessing or labels "
                    f"of version {current.version.version}; restart the service to serve it"
                )
            if current is not None:
                self.previous[name] = current
            self.live[name] = candidate
            self.refused.pop(name, None)
            return candidate

    def rollback(self, name: str) -> LoadedModel:
        with self.lock:
            previous = self.previous.pop(name, None)
            if previous is None:
                raise ModelUnavailable(f"{name}: no previous version to roll back to")
            self.previous[name], self.live[name] = self.live[name], previous
            return previous

    def ready(self) -> bool:
        return all(name in self.live or name in self.refused for name in config.SERVED) and bool(self.live)

    def status(self) -> dict:
        return {
            name: {**model.version.describe(), "provider": model.provider, "warmup_seconds": round(model.warmup_seconds, 3),
                   "previous_version": self.previous[name].version.version if name in self.previous else None}
            for name, model in self.live.items()
        } | {name: {"name": name, "refused": reason} for name, reason in self.refused.items()}
