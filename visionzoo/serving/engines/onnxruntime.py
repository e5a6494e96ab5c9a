"""ONNX Runtime: the CPU provider everywhere, the CUDA provider on a working NVIDIA GPU.

On CUDA the engine can convert the model to FP16 at load (`precision="fp16"`, inputs and outputs
stay float32, so callers see no difference) and binds outputs to device memory with IO binding, so
one batch costs one host-to-device and one device-to-host copy of exactly the requested outputs.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

import numpy as np

from .base import Engine, EngineRequest, EngineUnavailable

logger = logging.getLogger("visionzoo.engines")


def _ort():
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # errors only: converted TF graphs warn harmlessly
    return onnxruntime


def cuda_usable() -> bool:
    """True when ONNX Runtime offers CUDA *and* an NVIDIA driver is present (onnxruntime-gpu lists the
    CUDA provider on machines without a GPU, then fails noisily when a session asks for it)."""
    if "CUDAExecutionProvider" not in _ort().get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def session_options(threads: int):
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Do not busy-spin between runs: several sessions and the server's own threads share few cores
    # (onnxruntime#22967); spinning made a 2-core server slower under load, not faster.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def to_fp16(onnx_bytes: bytes) -> bytes:
    """The model with float32 weights and compute converted to float16; inputs and outputs stay float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return model.SerializeToString()


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session on `device` ("cpu" or "cuda")."""

    kind = "onnxruntime"

    def __init__(self, request: EngineRequest, device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(request)
        ort = _ort()
        if precision not in ("fp32", "fp16"):
            raise EngineUnavailable(f"onnxruntime: precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and device != "cuda":
            raise EngineUnavailable("onnxruntime: fp16 is for the CUDA provider; on CPU use fp32 or an int8 export")
        self._precision = precision
        model = request.onnx_path.read_bytes()
        if precision == "fp16":
            model = to_fp16(model)
        options = session_options(request.threads)
        if device == "cuda":
            if not cuda_usable():
                raise EngineUnavailable(f"onnxruntime: CUDA is not usable here (providers: {ort.get_available_providers()})")
            cuda = ("CUDAExecutionProvider", {
                "cudnn_conv_algo_search": "HEURISTIC",  # batch sizes vary: EXHAUSTIVE would re-search per size
                "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_use_max_workspace": "1",  # lets cuDNN pick tensor-core kernels (FP16)
                **request.options.get("cuda", {}),
            })
            self.session = ort.InferenceSession(model, options, providers=[cuda, "CPUExecutionProvider"])
            if self.session.get_providers()[0] != "CUDAExecutionProvider":
                raise EngineUnavailable("onnxruntime: the CUDA provider did not initialise for this model")
        elif device == "cpu":
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        else:
            raise EngineUnavailable(f"onnxruntime: unknown device {device!r}; expected cpu or cuda")
        self._device = device
        inputs = {i.name for i in self.session.get_inputs()}
        if request.input_name not in inputs:
            raise EngineUnavailable(f"onnxruntime: the model has no input {request.input_name!r} (it has {sorted(inputs)})")

    @property
    def device(self) -> str:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or self.request.output_names)
        if self._device == "cuda":
            return self._run_bound(batch, names)
        return dict(zip(names, self.session.run(names, {self.request.input_name: batch})))

    def _run_bound(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """IO binding: the input is copied to the GPU once, outputs are allocated there by ORT and
        copied back once (no intermediate host buffers)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.request.input_name, np.ascontiguousarray(batch))
        for name in names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def close(self) -> None:
        self.session = None
