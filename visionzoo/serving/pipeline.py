"""The serving pipeline: one `ServedModel` per served model, `decode -> queue -> batch -> engine ->
postprocess`, called directly by every front door (BentoML endpoints, OIP REST, OIP gRPC, and the
in-process Python API) in the process that received the request.

    models = ModelSet.from_settings()       # reads the manifest and the environment
    await models.start()                    # loads, verifies and warms every model (in threads)
    body = await models["bloodcell"].answer("predict", uploads, {"top_k": 3}, protocol="http")
    result = await models["bloodcell"].infer(batch)           # tensors in, tensors out (OIP)

A model version lives in a `Slot` (verified version, engine, task). Each request takes the slot that
is live when it arrives and keeps it to the end, so a hot swap (`swap`, `rollback`) never mixes
versions within a request and needs no pause: the new slot is loaded and warmed beside the old one,
then one assignment makes it live.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import config, engines, processing
from .batcher import BatchResult, DynamicBatcher, QueueFull, QueueTimeout, Reservation
from .config import ModelSettings, ServerSettings
from .errors import Conflict, Internal, NotFound, Overloaded, ServingError, Unavailable
from .processing import DecodedImage, Limits, Upload
from .repository import ModelUnavailable, ModelVersion, available_versions, load_version
from .tasks import Task, task_class

logger = logging.getLogger("visionzoo.serving")


@dataclass(eq=False)
class Slot:
    """One loaded version: verified files, its engine and its task."""

    version: ModelVersion
    engine: engines.Engine
    task: Task
    engine_info: dict = field(default_factory=dict)
    warmup_seconds: float = 0.0

    @property
    def number(self) -> str:
        return self.version.version

    @property
    def input_name(self) -> str:
        return self.version.inputs[0]["name"]

    def describe(self) -> dict:
        return {**self.version.describe(), **self.engine.describe(), **self.engine_info,
                "warmup_seconds": round(self.warmup_seconds, 3)}


@dataclass(frozen=True)
class LoadPlan:
    """A verified version and what loading it needs (engine request, warm-up sizes, sample inputs).
    `race_sizes`: the sizes an engine race times, the server's warm-up sizes (`sizes` may be fewer)."""

    version: ModelVersion
    task: Task
    request: engines.EngineRequest
    sizes: tuple[int, ...]
    sample: Any
    race_sizes: tuple[int, ...]


@dataclass(frozen=True)
class Inference:
    """Outputs of one request, and the slot (version) that computed them."""

    outputs: dict[str, np.ndarray]
    slot: Slot
    queue_ns: int = 0
    compute_ns: int = 0


DRAIN_QUIET_SECONDS = 0.5  # shutdown: how long no request may be in progress before the batchers close


class ServedModel:
    """One served model: its live slot, the previous one (for rollback), its batcher."""

    def __init__(self, settings: ModelSettings, server: ServerSettings, decode_pool: ThreadPoolExecutor,
                 metrics=None, warmup_sizes: Sequence[int] | None = None) -> None:
        """`warmup_sizes`: warm these batch sizes instead of the server's (an in-process caller that
        knows its batches; a size over the largest batch means the largest); an engine race still times
        the server's, so both share its cached choice."""
        self.name = settings.name
        self.settings = settings
        self.server = server
        self.warmup_sizes = tuple(warmup_sizes or ())
        self.decode_pool = decode_pool
        self.metrics = metrics
        self.slot: Slot | None = None
        self.previous: Slot | None = None
        self.state = "loading"
        self.reason = ""
        self.batcher = DynamicBatcher(self._run, settings.batcher, self.name, self._observe)
        self.requests = {"success": [0, 0], "fail": [0, 0]}  # count, ns
        self.answering = 0  # BentoML requests between arrival and answer (decode included): a shutdown waits for them
        self._swap_lock = asyncio.Lock()

    # ---- loading (blocking: called in a thread) ---------------------------------------------

    def plan(self, version: str | None = None) -> LoadPlan:
        """Find and verify a version (None: the configured one) and what its engine needs."""
        found = load_version(self.name, self.settings.export, self.server.models_dir, version or self.settings.version)
        try:
            task = task_class(found.task)(found)
        except ValueError as error:
            raise ModelUnavailable(f"{self.name}: {error}") from None
        (tensor,) = found.inputs
        model_file = found.model_file(self.settings.precision)
        request = engines.EngineRequest(model_file, tensor["name"], tuple(o["name"] for o in found.outputs),
                                        self.server.intra_op_threads, sha256=found.file_sha256(model_file))
        largest = self.settings.batcher.max_batch_size
        race_sizes = tuple(self.server.warmup_sizes(largest))
        sizes = tuple(sorted({min(size, largest) for size in self.warmup_sizes})) or race_sizes
        return LoadPlan(found, task, request, sizes, _sampler(tuple(tensor["shape"][1:])), race_sizes)

    def needs_race(self, plan: LoadPlan) -> bool:
        return engines.needs_race(plan.request, self.server.engine, self.server.device, plan.race_sizes)

    def load(self, plan: LoadPlan, defer: bool = False) -> Slot:
        """Compile, warm up and check one planned version. Raises ModelUnavailable with the reason.
        `defer`: the engine's optional work waits for `finish_loading` (at start-up, until every model is ready)."""
        started = time.perf_counter()
        try:
            engine, info = engines.choose(plan.request, self.server.engine, self.server.device, self.settings.precision,
                                          plan.sample, plan.sizes, defer=defer, race_sizes=plan.race_sizes)
        except engines.EngineUnavailable as error:
            raise ModelUnavailable(f"{self.name}: {error}") from None
        try:
            processing.check_finite(self.name, engine.run(plan.sample(1)))
        except ValueError as error:
            engine.close()
            raise ModelUnavailable(f"{error}; refusing to serve it") from None
        slot = Slot(plan.version, engine, plan.task, info, time.perf_counter() - started)
        logger.info("%s: version %s on %s/%s (%s), loaded and warmed in %.2fs for batch sizes %s", self.name,
                    plan.version.version, engine.kind, engine.device, info.get("chosen_by", ""), slot.warmup_seconds,
                    list(plan.sizes))
        return slot

    def load_slot(self, version: str | None = None) -> Slot:
        return self.load(self.plan(version))

    async def start(self, plan: LoadPlan | None = None, defer: bool = False) -> None:
        """Load the configured version; a failure refuses the model (with the reason) instead of raising."""
        try:
            self.slot = await asyncio.to_thread(lambda: self.load(plan or self.plan(), defer))
            self.state = "ready"
        except ModelUnavailable as error:
            self.refuse(str(error))
        except Exception as error:  # an engine crash on a broken file must not take the other models down
            logger.exception("cannot load %s", self.name)
            self.refuse(f"{self.name}: cannot load ({type(error).__name__})")
        self.batcher.start()

    def finish_loading(self) -> None:
        """The engine's deferred work (blocking: called in a thread); a failure leaves the model serving
        as it does (OpenVINO's dynamic model answers every batch size) and is logged."""
        slot = self.slot
        if slot is None:
            return
        started = time.perf_counter()
        try:
            slot.engine.finish_loading()
        except Exception as error:  # noqa: BLE001 - an optional speed-up must not take a serving model down
            logger.warning("%s: version %s keeps its first engine setup: %s", self.name, slot.version.version, error)
            return
        logger.debug("%s: deferred engine work done in %.2fs", self.name, time.perf_counter() - started)

    def refuse(self, reason: str) -> None:
        self.state, self.reason = "refused", reason
        logger.error("refusing to serve %s: %s", self.name, reason)

    # ---- hot swap -----------------------------------------------------------------------------

    async def swap(self, version: str | None = None) -> Slot:
        """Load `version` (None: the newest; a pinned version is ignored here) beside the live one,
        check its signature matches, then make it live. Requests in flight finish on the old slot."""
        async with self._swap_lock:
            try:
                candidate = await asyncio.to_thread(self._load_exactly, version)
            except ModelUnavailable as error:
                raise Conflict(str(error)) from None
            current = self.slot
            if current is not None and candidate.version.signature() != current.version.signature():
                candidate.engine.close()
                raise Conflict(f"{self.name}: version {candidate.number} changes the input/output signature, "
                               f"preprocessing, labels or task of version {current.number}; restart the service to serve it")
            self.previous, self.slot = current, candidate
            self.state, self.reason = "ready", ""
            logger.info("%s now serves version %s", self.name, candidate.number)
            return candidate

    def _load_exactly(self, version: str | None) -> Slot:
        if version is None:
            versions = available_versions(self.server.models_dir, self.settings.export)
            version = versions[-1] if versions else None
        return self.load_slot(version)

    async def unload(self) -> None:
        """Stop serving (OIP repository `unload`): requests get 503 until `swap` loads a version again."""
        async with self._swap_lock:
            if self.slot is not None:
                self.previous = self.slot
            self.slot, self.state, self.reason = None, "unloaded", "unloaded through the model repository API"
            logger.info("%s unloaded", self.name)

    async def rollback(self) -> Slot:
        async with self._swap_lock:
            if self.previous is None:
                raise Conflict(f"{self.name}: no previous version to roll back to")
            self.previous, self.slot = self.slot, self.previous
            logger.info("%s rolled back to version %s", self.name, self.slot.number)
            return self.slot

    # ---- inference ----------------------------------------------------------------------------

    def live(self) -> Slot:
        if self.slot is None:
            if self.state == "loading":
                raise Unavailable(f"model {self.name!r} is still loading; retry in a moment")
            raise Unavailable(f"model {self.name!r} is not available: {self.reason}")
        return self.slot

    def _run(self, slot: Slot, batch: np.ndarray, outputs: tuple[str, ...] | None) -> dict[str, np.ndarray]:
        return slot.engine.run(batch, outputs)

    def _observe(self, size: int, queue_ns: int, compute_ns: int) -> None:
        if self.metrics is not None and self.slot is not None:
            self.metrics.batch(self.name, self.slot.number, size, queue_ns / 1e9, compute_ns / 1e9,
                               self.batcher.queued_items)

    def reserve(self, items: int) -> Reservation:
        """Room in the queue for `items` model inputs, taken before any decoding (Overloaded when there
        is none): under overload a refusal then costs microseconds instead of the request's decode
        work, and a request let in is never turned away for room after its decode work. Pass it to
        `infer`, inside `with` so that a request failing before then gives its room back. A request
        of no images or of more than VISIONZOO_MAX_IMAGES reserves nothing (an empty reservation,
        so `submit` checks it): it is left to the checks that say why (400 / 413), as no retry would
        make it pass, so it must not be told 503."""
        if not 0 < items <= self.server.max_images:
            return Reservation(None, 0)
        try:
            return self.batcher.reserve(items)
        except QueueFull as error:
            raise Overloaded(str(error)) from None

    async def infer(self, batch: np.ndarray, outputs: Sequence[str] | None = None, slot: Slot | None = None,
                    reservation: Reservation | None = None) -> Inference:
        """A float32 (N, H, W, C) batch through the queue and the engine; outputs keyed by name.
        `reservation`: the room `reserve` took for it at the door."""
        slot = slot or self.live()
        try:
            result: BatchResult = await self.batcher.submit(slot, batch, tuple(outputs) if outputs else None,
                                                            reservation)
        except (QueueFull, QueueTimeout) as error:
            raise Overloaded(str(error)) from None
        except ServingError:
            raise
        except Exception as error:
            raise Internal(f"model {self.name!r} failed on this batch ({type(error).__name__})") from error
        try:
            processing.check_finite(self.name, result.outputs)
        except ValueError as error:
            raise Internal(f"{error}; the request was not answered") from None
        return Inference(result.outputs, result.slot, result.queue_ns, result.compute_ns)

    def limits(self) -> Limits:
        s = self.server
        return Limits(s.max_images, s.max_image_bytes, s.max_image_pixels, s.max_tiles_per_image, s.max_tiles_per_request)

    async def decode(self, uploads: list[Upload], slot: Slot, keep_source: bool = False) -> list[DecodedImage]:
        """Uploads -> model inputs, in the decode thread pool (never on the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decode_pool, processing.decode_uploads, uploads, slot.version.spec,
                                          self.limits(), keep_source)

    async def answer(self, verb: str, uploads: list[Upload], options: dict, protocol: str = "http") -> dict:
        """The BentoML endpoints' whole path: decode, infer, shape the answer (with the version that
        computed it). Raises ServingError subclasses."""
        started = time.perf_counter()
        version = self.slot.number if self.slot else ""
        self.answering += 1
        try:
            slot = self.live()
            version = slot.number
            slot.task.check(verb, options)
            with self.reserve(len(uploads)) as room:  # each file is one model input or more
                images = await self.decode(uploads, slot, slot.task.keep_source(options))
                inference = await self.infer(processing.stack_tiles(images), slot.task.engine_outputs(options),
                                             slot=slot, reservation=room)
            if slot.task.heavy_results(options):
                loop = asyncio.get_running_loop()
                body = await loop.run_in_executor(self.decode_pool, slot.task.results, verb, images, inference.outputs, options)
            else:
                body = slot.task.results(verb, images, inference.outputs, options)
        except ServingError as error:
            self.count(version, protocol, started, error.reason)
            raise
        except Exception:
            self.count(version, protocol, started, "internal")
            raise
        finally:
            self.answering -= 1
        self.count(version, protocol, started)
        return {"model": {"name": self.name, "export": slot.version.export_name, "version": slot.number}, **body}

    def count(self, version: str, protocol: str, started: float, failure: str | None = None) -> None:
        """One finished request, for /metrics and the OIP statistics."""
        elapsed = time.perf_counter() - started
        tally = self.requests["fail" if failure else "success"]
        tally[0] += 1
        tally[1] += int(elapsed * 1e9)
        if self.metrics is not None:
            self.metrics.request(self.name, version, protocol, elapsed, failure)

    def statistics(self) -> dict:
        """Triton's ModelStatistics (JSON form) for the live version."""
        stats = self.batcher.stats
        return {
            "name": self.name,
            "version": self.slot.number if self.slot else "",
            "last_inference": stats.last_inference_ms,
            "inference_count": stats.inference_count,
            "execution_count": stats.execution_count,
            "inference_stats": {
                "success": {"count": self.requests["success"][0], "ns": self.requests["success"][1]},
                "fail": {"count": self.requests["fail"][0], "ns": self.requests["fail"][1]},
                "queue": {"count": stats.success_count, "ns": stats.queue_ns},
                "compute_input": {"count": 0, "ns": 0},
                "compute_infer": {"count": stats.execution_count, "ns": stats.compute_ns},
                "compute_output": {"count": 0, "ns": 0},
            },
            "batch_stats": [{"batch_size": size, "compute_input": {"count": 0, "ns": 0},
                             "compute_infer": {"count": runs, "ns": ns}, "compute_output": {"count": 0, "ns": 0}}
                            for size, (runs, ns) in sorted(stats.batch_sizes.items())],
        }

    def status(self) -> dict:
        if self.slot is None:
            return {"name": self.name, "export": self.settings.export, "state": self.state, "refused": self.reason or None}
        return {**self.slot.describe(), "state": self.state, "precision": self.settings.precision,
                "previous_version": self.previous.number if self.previous else None,
                "batching": self.settings.batcher.__dict__, "queued_items": self.batcher.queued_items,
                "endpoint_requests_in_progress": self.answering}


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim): compiling engines in
    several threads leaves freed memory in per-thread arenas, which RSS would otherwise keep counting."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        pass


def _sampler(shape: tuple[int, ...]):
    """Deterministic, varied inputs of `shape` for warm-up and the engine race."""

    def sample(size: int) -> np.ndarray:
        return np.random.default_rng(0).uniform(0, 255, size=(size, *shape)).astype(np.float32)

    return sample


class ModelSet:
    """Every served model of one server, the shared decode pool and the metrics."""

    def __init__(self, models: dict[str, ServedModel], server: ServerSettings, decode_pool: ThreadPoolExecutor) -> None:
        self.models = models
        self.server = server
        self.decode_pool = decode_pool
        self.started = False
        self._finishing: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, metrics=None) -> ModelSet:
        server = config.server_settings()
        pool = ThreadPoolExecutor(server.decode_workers, thread_name_prefix="decode")
        models = {name: ServedModel(settings, server, pool, metrics) for name, settings in config.served_models().items()}
        return cls(models, server, pool)

    def __getitem__(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(f"unknown model {name!r}; served models: {', '.join(self.models)}") from None

    def __iter__(self):
        return iter(self.models.values())

    async def start(self) -> None:
        """Load every model: those whose engine is known at once in parallel (ONNX Runtime and OpenVINO
        compile and run outside the GIL), then those that race their engines one after another (a race
        timed while another model compiles would measure the neighbour, not the engine)."""
        plans: dict[str, LoadPlan] = {}
        for name, model in self.models.items():
            try:
                plans[name] = await asyncio.to_thread(model.plan)
            except ModelUnavailable as error:
                model.refuse(str(error))
                model.batcher.start()
        racing = [name for name, plan in plans.items() if self.models[name].needs_race(plan)]
        await asyncio.gather(*(self.models[name].start(plan, defer=True) for name, plan in plans.items() if name not in racing))
        for name in racing:
            await self.models[name].start(plans[name])
        self.started = True
        self._finishing = asyncio.create_task(self._finish_loading())

    async def _finish_loading(self) -> None:
        """Once ready: each engine's deferred work, one model at a time (requests are served meanwhile)."""
        for model in self.models.values():
            await asyncio.to_thread(model.finish_loading)
        release_free_memory()

    def ready(self) -> bool:
        """Ready when every model of the manifest serves (a refused model makes the server unready,
        so a load balancer sends its traffic to replicas that serve everything)."""
        return self.started and all(model.state == "ready" for model in self.models.values())

    def status(self) -> dict[str, Any]:
        return {name: model.status() for name, model in self.models.items()}

    def repository_index(self) -> list[dict]:
        """OIP repository index: every model of the manifest with its state (READY, LOADING, UNAVAILABLE)."""
        states = {"ready": "READY", "loading": "LOADING"}
        return [{"name": name, "version": model.slot.number if model.slot else "",
                 "state": states.get(model.state, "UNAVAILABLE"), "reason": model.reason}
                for name, model in self.models.items()]

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Let requests already received finish (those still decoding reach their queue: the batchers
        keep taking them), for up to `drain_seconds` in all; then stop the batchers and engines."""
        deadline = time.monotonic() + drain_seconds
        quiet_since = None  # a request still being read has not reached `answer` yet: wait for a quiet spell
        while time.monotonic() < deadline:
            busy = any(model.answering or model.batcher.queued_items for model in self.models.values())
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= DRAIN_QUIET_SECONDS:
                break
            await asyncio.sleep(0.01)
        remaining = max(0.0, deadline - time.monotonic())
        await asyncio.gather(*(model.batcher.stop(remaining) for model in self.models.values()))
        if self._finishing is not None:
            self._finishing.cancel()  # no further model starts its deferred work; one in progress ends at close
        for model in self.models.values():
            for slot in (model.slot, model.previous):
                if slot is not None:
                    slot.engine.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
