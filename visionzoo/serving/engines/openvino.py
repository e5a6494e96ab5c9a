"""OpenVINO on the CPU: reads the exported ONNX file directly (no conversion step, no extra file).

Compiled with the LATENCY hint (one stream using every core: the batcher runs one batch at a time per
model, so one stream is what it can use) and f32 inference precision, so results match ONNX Runtime
on CPUs that would otherwise pick bf16. Besides the dynamic-batch model, a static-shape copy is
compiled for each of `static_sizes` (the warm-up sizes: batch 1 and the largest batch, what one
client and a saturated queue send): static shapes ran 15-20 % faster than the dynamic model here.
The static copies are clones of the one model read from the file, so all of them share its
weights (reading the file once per copy held one copy of the weights per shape: +100 MiB for the
three-network blood-cell ensemble). With `defer_static` they compile in `finish_loading`, which the
service runs once every model is ready (the dynamic model answers every size until then): each
compile takes about half a second per network on 2 cores, most of the blood-cell ensemble's load.
Once they serve, the dynamic model's working memory is released (it is allocated again when a batch
size without a static copy comes): ~45 MiB less for the Mars model once settled.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

import numpy as np

from .base import Engine, EngineRequest, EngineUnavailable

# One stream using every core (see above), f32 so results match ONNX Runtime.
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
_primed = False
_priming = threading.Lock()


def prime_bindings() -> None:
    """Run OpenVINO's Python bindings once, on one thread, before any engine is built or run.

    The bindings initialise C++ function-local statics on their first use (the element type ->
    numpy dtype table that every `infer` reads among them), holding the GIL. Two threads reaching
    one for the first time together can deadlock, one waiting for the static's guard with the GIL
    held, the other inside the guard waiting for the GIL, and then every thread of the process waits
    for the GIL. The service builds and warms its models on parallel threads, so a start could hang
    for good before ready: twice in ~20 `bentoml serve` starts here (py-spy: `__cxa_guard_acquire`
    in one loading thread, `pthread_cond_timedwait` in the others), and 2 of 28 fresh processes that
    ran three engines' first inference at once (3 of 30 in a second count; 0 of 60 with this
    priming). A tiny model compiled and run both ways (copied and shared inputs) under a lock
    initialises them before anything runs concurrently."""
    global _primed
    with _priming:
        if _primed:
            return
        import openvino as ov
        import openvino.opset13 as ops

        pixels = ops.parameter([-1, 2], ov.Type.f32, name="x")
        compiled = ov.Core().compile_model(ov.Model([ops.relu(pixels)], [pixels]), "CPU", COMPILE_CONFIG)
        request = compiled.create_infer_request()
        batch = np.ones((1, 2), np.float32)
        request.infer({"x": batch})
        request.infer({"x": batch}, share_inputs=True, share_outputs=False)
        _primed = True


class _Compiled:
    """One compiled model, its infer request and its outputs by name."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.outputs = {name: port for port in compiled.outputs for name in port.get_names()}


class OpenVINOEngine(Engine):
    kind = "openvino"

    def __init__(self, request: EngineRequest, static_sizes: Sequence[int] = (), defer_static: bool = False) -> None:
        super().__init__(request)
        try:
            import openvino as ov
        except ImportError as error:
            raise EngineUnavailable("openvino is not installed (pip install openvino)") from error
        prime_bindings()  # before this thread touches the bindings alongside another
        self._core = ov.Core()
        self._config = {**COMPILE_CONFIG, **request.options.get("openvino", {})}
        if request.threads:
            self._config["INFERENCE_NUM_THREADS"] = request.threads
        self._static: dict[int, _Compiled] = {}
        self._pending: dict[int, object] = {}  # size -> reshaped clone, compiled by finish_loading
        self._lock = threading.Lock()
        self._dynamic_lock = threading.Lock()  # release_memory() must not overlap a run of the dynamic model
        try:
            model = self._core.read_model(str(request.onnx_path))
            names = {name for port in model.inputs for name in port.get_names()}
            if request.input_name not in names:
                raise EngineUnavailable(f"openvino: the model has no input {request.input_name!r} (it has {sorted(names)})")
            self._dynamic = _Compiled(self._core.compile_model(model, "CPU", self._config))
            port = model.inputs[0]
            self._item_shape = [d.get_length() for d in list(port.get_partial_shape())[1:]]
            for size in sorted(set(static_sizes)):
                fixed = model.clone()  # shares the weights with `model`: one copy in memory, not one per size
                fixed.reshape({port.get_any_name(): [size, *self._item_shape]})
                self._pending[size] = fixed
        except RuntimeError as error:
            raise EngineUnavailable(f"openvino cannot compile {request.onnx_path.name}: {str(error).splitlines()[0]}") from error
        missing = [n for n in request.output_names if n not in self._dynamic.outputs]
        if missing:
            raise EngineUnavailable(f"openvino: the model has no outputs {missing}")
        if not defer_static:
            self.finish_loading()

    def sizes_to_warm(self, sizes: Sequence[int]) -> Sequence[int]:
        # while static copies are pending only the smallest size: each copy warms itself when compiled,
        # and running the dynamic model at the largest batch would hold memory that copy then makes idle
        return sizes[:1] if self._pending else sizes

    def finish_loading(self) -> None:
        """Compile and warm the static-shape copies still pending; each serves once it is warm."""
        while True:
            with self._lock:  # one copy at a time, so close() waits for one compile at most
                if self._dynamic is None:
                    return
                if not self._pending:
                    self._release_dynamic_memory()
                    return
                size, model = next(iter(self._pending.items()))
                try:
                    compiled = _Compiled(self._core.compile_model(model, "CPU", self._config))
                    compiled.request.infer({self.request.input_name: np.zeros([size, *self._item_shape], np.float32)},
                                           share_outputs=False)
                except RuntimeError as error:  # the dynamic model still answers this size
                    del self._pending[size]
                    raise EngineUnavailable(f"openvino cannot compile {self.request.onnx_path.name} at batch {size}: "
                                            f"{str(error).splitlines()[0]}") from error
                self._static = {**self._static, size: compiled}  # published whole: run() reads it without the lock
                del self._pending[size]  # after publishing: describe() never loses a size on the way

    def _release_dynamic_memory(self) -> None:
        """Once static copies serve, free the dynamic model's working memory (the buffers its warm-up
        at batch 1 left, which the static copy now answers). It is allocated again if a batch size
        without a static copy comes."""
        if self._static and hasattr(self._dynamic.compiled, "release_memory"):
            with self._dynamic_lock:  # not while the dynamic model runs
                self._dynamic.compiled.release_memory()

    @property
    def device(self) -> str:
        return "cpu"

    def describe(self) -> dict:
        # pending: static copies finish_loading has still to compile (the dynamic model answers those sizes)
        return {**super().describe(), "static_batch_sizes": sorted(self._static), "pending_batch_sizes": sorted(self._pending)}

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or self.request.output_names)
        compiled = self._static.get(len(batch))
        with self._dynamic_lock if compiled is None else contextlib.nullcontext():
            compiled = compiled or self._dynamic
            # share_inputs: no copy of the batch; share_outputs=False: the arrays outlive the next run.
            result = compiled.request.infer({self.request.input_name: batch}, share_inputs=True, share_outputs=False)
        return {name: result[compiled.outputs[name]] for name in names}

    def close(self) -> None:
        with self._lock:  # waits for a compile in progress
            self._dynamic = None
            self._static, self._pending = {}, {}
