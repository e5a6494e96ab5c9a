"""A custom MLServer runtime for the benchmark peer: one ONNX Runtime CPU session per model.

It runs inside the MLServer venv (benchmarks/out/mlserver-venv, python3.11 with mlserver 1.7.1), not
the project's venv, so it imports nothing from visionzoo; the session options below copy
visionzoo/serving/engines/onnxruntime.py `session_options` (keep the two in step):

- graph_optimization_level = ORT_ENABLE_ALL
- intra_op_num_threads = `threads` when non-zero (0: ORT's default, every core), inter_op = 1
- log_severity_level = 3, and `session.intra_op.allow_spinning = 0` (no busy-spin between runs)

model-settings.json `parameters.uri` is the ONNX file; `parameters.extra` holds
`input_name`, `output_names` (list), `threads` (int, default 0) and `report_batch_size` (bool,
default false: when true each response carries the merged batch's first dimension as the response
parameter `batch_size`, so a check can see adaptive batching at work; off for benchmarks).

The request path is MLServer's own: the gRPC servicer unpacks `raw_input_contents` into the
request's `data` (a Python list), adaptive batching concatenates the requests' data along the first
dimension, and `NumpyCodec` turns it into an array; outputs go back through `NumpyCodec`
(flattened lists, which MLServer splits per request and repacks as raw bytes for gRPC callers).
`predict` runs the session synchronously, as MLServer's bundled runtimes (sklearn, xgboost, ...)
do: in the inference-pool worker when parallel_workers >= 1, on the server's event loop when 0.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters


def session_options(threads: int) -> ort.SessionOptions:
    """visionzoo/serving/engines/onnxruntime.session_options, copied: this runs in MLServer's own venv,
    which does not install visionzoo. Keep the two equal (the comparison is only fair while they are)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxModel(MLModel):
    async def load(self) -> bool:
        ort.set_default_logger_severity(3)
        parameters = self.settings.parameters
        extra = dict(parameters.extra or {})
        self._threads = int(extra.get("threads", 0))
        self._session = ort.InferenceSession(parameters.uri, session_options(self._threads),
                                             providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self._session.get_inputs()]
        self._input_name = extra.get("input_name") or inputs[0]
        if self._input_name not in inputs:
            raise MLServerError(f"the model has no input {self._input_name!r} (it has {inputs})")
        self._report_batch_size = bool(extra.get("report_batch_size", False))
        self._output_names = list(extra.get("output_names") or [o.name for o in self._session.get_outputs()])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        found = [i for i in payload.inputs if i.name == self._input_name] or payload.inputs[:1]
        if not found:
            raise MLServerError("the request has no inputs")
        if found[0].datatype != "FP32":
            raise MLServerError(f"input {found[0].name!r} must be FP32, got {found[0].datatype}")
        batch = np.ascontiguousarray(NumpyCodec.decode_input(found[0]), dtype=np.float32)
        wanted = [o.name for o in payload.outputs] if payload.outputs else self._output_names
        results = self._session.run(wanted, {self._input_name: batch})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(wanted, results)],
            parameters=Parameters(batch_size=int(batch.shape[0])) if self._report_batch_size else None,
        )
