"""OpenVINO on the CPU: reads the exported ONNX file directly (no conversion step, no extra file).

Compiled with the LATENCY hint (one stream using every core: the batcher runs one batch at a time per
model, so one stream is what it can use) and f32 inference precision, so results match ONNX Runtime
on CPUs that would otherwise pick bf16. Besides the dynamic-batch model, a static-shape copy is
compiled for each of `static_sizes` (the warm-up sizes: batch 1 and the largest batch, what one
client and a saturated queue send): static shapes ran 15-20 % faster than the dynamic model here.
The static copies are clones of the one model read from the file, so all of them share its
weights (reading the file once per copy held one copy of the weights per shape: +100 MiB for the
three-network blood-cell ensemble).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Engine, EngineRequest, EngineUnavailable


class _Compiled:
    """One compiled model, its infer request and its outputs by name."""

    def __init__(self, compiled) -> None:
        self.request = compiled.create_infer_request()
        self.outputs = {name: port for port in compiled.outputs for name in port.get_names()}


class OpenVINOEngine(Engine):
    kind = "openvino"

    def __init__(self, request: EngineRequest, static_sizes: Sequence[int] = ()) -> None:
        super().__init__(request)
        try:
            import openvino as ov
        except ImportError as error:
            raise EngineUnavailable("openvino is not installed (pip install openvino)") from error
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **request.options.get("openvino", {})}
        if request.threads:
            config["INFERENCE_NUM_THREADS"] = request.threads
        try:
            model = core.read_model(str(request.onnx_path))
            names = {name for port in model.inputs for name in port.get_names()}
            if request.input_name not in names:
                raise EngineUnavailable(f"openvino: the model has no input {request.input_name!r} (it has {sorted(names)})")
            self._dynamic = _Compiled(core.compile_model(model, "CPU", config))
            self._static: dict[int, _Compiled] = {}
            for size in sorted(set(static_sizes)):
                fixed = model.clone()  # shares the weights with `model`: one copy in memory, not one per size
                port = fixed.inputs[0]
                fixed.reshape({port.get_any_name(): [size, *[d.get_length() for d in list(port.get_partial_shape())[1:]]]})
                self._static[size] = _Compiled(core.compile_model(fixed, "CPU", config))
        except RuntimeError as error:
            raise EngineUnavailable(f"openvino cannot compile {request.onnx_path.name}: {str(error).splitlines()[0]}") from error
        missing = [n for n in request.output_names if n not in self._dynamic.outputs]
        if missing:
            raise EngineUnavailable(f"openvino: the model has no outputs {missing}")

    @property
    def device(self) -> str:
        return "cpu"

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or self.request.output_names)
        compiled = self._static.get(len(batch), self._dynamic)
        # share_inputs: no copy of the batch; share_outputs=False: the arrays outlive the next run.
        result = compiled.request.infer({self.request.input_name: batch}, share_inputs=True, share_outputs=False)
        return {name: result[compiled.outputs[name]] for name in names}

    def close(self) -> None:
        self._dynamic = None
        self._static = {}
