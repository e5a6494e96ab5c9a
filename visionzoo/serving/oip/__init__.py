"""Open Inference Protocol v2 (KServe v2, Triton) for the visionzoo service, over HTTP and gRPC.

- `tensors`: codecs between raw bytes / typed gRPC contents / JSON data and numpy arrays.
- `models`: each served model as OIP clients see it (inputs, outputs, preprocessing of files).
- `backend`: health, metadata, configuration, statistics, repository and inference over the served
  models (shared by both transports; inference goes through `ServedModel.infer`, hence the same
  queues and batches as the BentoML endpoints).
- `rest`: the `/v2/...` routes (mounted on BentoML's HTTP port) with binary tensor data.
- `grpc_service`: `inference.GRPCInferenceService` on a grpc.aio server in the BentoML worker.
- `errors`: the protocol's names for serving/errors.py (which maps every error to HTTP and gRPC).

Only `rest.app`, `start_grpc` and `stop_grpc` are wired into `visionzoo/serving/service.py`.
"""

from .grpc_service import start_grpc, stop_grpc
from .rest import app as rest_app

__all__ = ["rest_app", "start_grpc", "stop_grpc"]
