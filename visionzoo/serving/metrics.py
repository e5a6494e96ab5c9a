"""Prometheus metrics per model, version and protocol, named after Triton's (and MLServer's) so that
existing dashboards and alerts translate one to one. Served by BentoML's `/metrics` beside its own.

| visionzoo | Triton | MLServer | what |
|---|---|---|---|
| `visionzoo_inference_request_success_total` | `nv_inference_request_success` | `model_infer_request_success` | requests answered, per model, version, protocol |
| `visionzoo_inference_request_failure_total` | `nv_inference_request_failure` | `model_infer_request_failure` | requests refused or failed, with `reason` (invalid, too_large, unsupported_media, overloaded, unavailable, internal) |
| `visionzoo_inference_count_total` | `nv_inference_count` | | items (images or tiles) inferred |
| `visionzoo_inference_exec_count_total` | `nv_inference_exec_count` | | engine runs (batches) |
| `visionzoo_inference_request_duration_seconds` | `nv_inference_request_duration_us` | `model_infer_request_duration` | time in the server per request (histogram) |
| `visionzoo_inference_queue_duration_seconds` | `nv_inference_queue_duration_us` | `batch_request_queue` | time a batch's oldest request waited (histogram) |
| `visionzoo_inference_compute_infer_duration_seconds` | `nv_inference_compute_infer_duration_us` | | engine time per batch (histogram) |
| `visionzoo_inference_batch_size` | | | items per engine run (histogram) |
| `visionzoo_inference_queue_items` | `nv_inference_pending_request_count` | | items waiting now (gauge) |

Counting costs a few microseconds per request (a counter and a histogram observation) and one
histogram set per batch; nothing is logged per request unless VISIONZOO_ACCESS_LOG=on.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class Metrics:
    success: object
    failure: object
    inference_count: object
    exec_count: object
    request_duration: object
    queue_duration: object
    compute_duration: object
    batch_size: object
    queue_items: object

    @classmethod
    def create(cls, registry=None) -> Metrics:
        """The instruments, registered once per process (prometheus_client is imported here, after
        `bentoml serve` has set PROMETHEUS_MULTIPROC_DIR for the worker)."""
        import prometheus_client as prom

        kwargs = {"registry": registry} if registry is not None else {}
        request_labels = ("model", "version", "protocol")
        model_labels = ("model", "version")
        return cls(
            success=prom.Counter("visionzoo_inference_request_success", "Inference requests answered",
                                 request_labels, **kwargs),
            failure=prom.Counter("visionzoo_inference_request_failure", "Inference requests refused or failed",
                                 (*request_labels, "reason"), **kwargs),
            inference_count=prom.Counter("visionzoo_inference_count", "Items (images or tiles) inferred", model_labels, **kwargs),
            exec_count=prom.Counter("visionzoo_inference_exec_count", "Engine runs (batches)", model_labels, **kwargs),
            request_duration=prom.Histogram("visionzoo_inference_request_duration_seconds", "Time in the server per request",
                                            request_labels, buckets=LATENCY_BUCKETS, **kwargs),
            queue_duration=prom.Histogram("visionzoo_inference_queue_duration_seconds",
                                          "Time the oldest request of a batch waited in the queue", model_labels,
                                          buckets=LATENCY_BUCKETS, **kwargs),
            compute_duration=prom.Histogram("visionzoo_inference_compute_infer_duration_seconds", "Engine time per batch",
                                            model_labels, buckets=LATENCY_BUCKETS, **kwargs),
            batch_size=prom.Histogram("visionzoo_inference_batch_size", "Items per engine run", model_labels,
                                      buckets=BATCH_BUCKETS, **kwargs),
            queue_items=prom.Gauge("visionzoo_inference_queue_items", "Items waiting in the queue", ("model",),
                                   multiprocess_mode="livesum", **kwargs),
        )

    def __post_init__(self) -> None:
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels):
        """metric.labels(*labels), looked up once (prometheus_client's lookup costs ~7 us a call)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, model: str, version: str, protocol: str, seconds: float, failure: str | None = None) -> None:
        if failure is None:
            self._child(self.success, model, version, protocol).inc()
        else:
            self._child(self.failure, model, version, protocol, failure).inc()
        self._child(self.request_duration, model, version, protocol).observe(seconds)

    def batch(self, model: str, version: str, size: int, queue_seconds: float, compute_seconds: float, queued: int) -> None:
        self._child(self.inference_count, model, version).inc(size)
        self._child(self.exec_count, model, version).inc()
        self._child(self.batch_size, model, version).observe(size)
        self._child(self.queue_duration, model, version).observe(queue_seconds)
        self._child(self.compute_duration, model, version).observe(compute_seconds)
        self._child(self.queue_items, model).set(queued)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text for GET /metrics: every process's samples when running under `bentoml
    serve` (multi-process directory), this process's otherwise."""
    import os

    import prometheus_client as prom
    from prometheus_client import multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = prom.REGISTRY
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
