"""The one interface every inference engine implements, and the errors engines raise.

An engine holds one exported model version compiled for one device. It takes the model's single
input tensor as a batch (float32 NHWC, pixels 0..255) and returns the outputs by name. Engines are
used by one batch at a time per engine instance (the batcher's scheduler guarantees it), and their
`run` releases the GIL while the native runtime works, so the event loop keeps serving requests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (package missing, no GPU, model it cannot compile); the message says why."""


@dataclass(frozen=True)
class EngineRequest:
    """What to build: the ONNX file, its one input and its outputs (names from metadata.json)."""

    onnx_path: Path
    input_name: str
    output_names: tuple[str, ...]
    threads: int = 0  # intra-op threads; 0 = the engine's default (every core this process may use)
    options: dict = field(default_factory=dict)
    sha256: str = ""  # the file's digest where the caller already verified it (else hashed when needed)


class Engine(ABC):
    """One compiled model on one device."""

    kind: str = ""  # "onnxruntime" or "openvino"

    def __init__(self, request: EngineRequest) -> None:
        self.request = request

    @property
    @abstractmethod
    def device(self) -> str:
        """"cpu" or "cuda" (where the work really runs, checked after the engine starts)."""

    @property
    def precision(self) -> str:
        return "fp32"

    @abstractmethod
    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """(N, H, W, C) float32 -> {output name: (N, ...) array}; `outputs` limits what is computed."""

    def describe(self) -> dict:
        return {"engine": self.kind, "device": self.device, "precision": self.precision}

    def sizes_to_warm(self, sizes: Sequence[int]) -> Sequence[int]:
        """Of the warm-up batch sizes, those to run now (all of them unless work is deferred)."""
        return sizes

    def finish_loading(self) -> None:
        """Work that may wait until the service is ready (compiling extra shapes); `run` answers
        correctly before it. Engines without such work do nothing."""

    def close(self) -> None:
        """Release native resources (sessions, compiled models) now rather than at garbage collection."""
