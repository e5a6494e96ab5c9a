"""Open Inference Protocol v2 (KServe v2, Triton) for the visionzoo service, over HTTP and gRPC.

- `tensors`: codecs between raw bytes / typed gRPC contents / JSON data and numpy arrays.
- `models`: each served model as OIP clients see it (inputs, outputs, preprocessing of files).
- `backend`: health, metadata and inference over the live `VisionZoo` (shared by both transports;
  inference goes through `VisionZoo.infer`, hence the runtime's adaptive batching).
- `rest`: the `/v2/...` routes (mounted on BentoML's HTTP port) with binary tensor data.
- `grpc_service`: `inference.GRPCInferenceService` on a grpc.aio server in the BentoML worker.
- `errors`: one exception per status; each transport maps them to its codes.

Only `rest.app`, `start_grpc` and `stop_grpc` are wired into `visionzoo/serving/service.py`.
"""

from .grpc_service import start_grpc, stop_grpc
from .rest import app as rest_app

__all__ = ["rest_app", "start_grpc", "stop_grpc"]
