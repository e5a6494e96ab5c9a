"""The dynamic batcher: Triton's `dynamic_batching` semantics on an asyncio event loop.

Requests (one or more items each: images, or tiles of images) wait in one FIFO queue per model. An
engine instance that is free takes the oldest requests, up to `max_batch_size` items, and runs them
as one batch in its own thread (the engines release the GIL, so the event loop keeps accepting
requests); each request gets exactly its rows of the outputs back.

| setting | meaning (Triton's name) |
|---|---|
| `max_batch_size` | most items in one engine run (`max_batch_size`); a larger request is split into several runs |
| `max_queue_delay_us` | how long a batch smaller than `max_batch_size` (or than a preferred size) may wait for more requests before it runs (`max_queue_delay_microseconds`); 0, the default, runs whatever is queued as soon as an instance is free |
| `preferred_batch_sizes` | batch sizes to form when the queue holds more than one of them (`preferred_batch_size`) |
| `max_queue_size` | most items waiting; a request that does not fit is refused at once, before its files or tensor are decoded (`reserve`) (`default_queue_policy.max_queue_size`, counted in items here because one request may carry 64 images) |
| `queue_timeout_us` | a request still queued after this long is refused instead of run (`default_timeout_microseconds`, `timeout_action: REJECT`) |
| `instances` | engine runs in flight at once (`instance_group.count`) |

Admission happens once, at the door: `reserve` counts a request's items as queued before its files or
tensor are decoded, and `submit` spends that reservation, so a request that was let in is never refused
later for room, and no decode work is spent on a request the queue then turns away. (Checking room at
the door without holding it let concurrent requests all pass the check, decode, and then be refused at
`submit`: under a flood of 8-image uploads most of the decoding was thrown away that way.)

Nothing is learned from past traffic: the only state is the queue itself, so latency after a burst is
the latency of an empty queue as soon as the queue is empty again.

Requests are tagged with the model version (`slot`) that was live when they arrived; a batch only
holds requests of one slot, so a request never mixes versions and a hot swap needs no pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

logger = logging.getLogger("visionzoo.batcher")


class QueueFull(RuntimeError):
    """The model's queue cannot take the request now (HTTP 503 with Retry-After, gRPC UNAVAILABLE)."""


class QueueTimeout(RuntimeError):
    """The request waited longer than the queue timeout and was not run (503 / UNAVAILABLE)."""


@dataclass(eq=False)
class Reservation:
    """Room in a model's queue, taken at the door (`DynamicBatcher.reserve`) and spent by `submit`.

    Use it as a context manager around the work between the door and `submit` (decoding): leaving the
    block gives back whatever `submit` did not spend, so a request that fails in between (a bad file)
    frees its room."""

    batcher: DynamicBatcher | None
    size: int

    def release(self) -> None:
        """Give the room back (idempotent; nothing once `submit` spent it)."""
        if self.batcher is not None:
            self.batcher._queued_items -= self.size
            self.batcher = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass(frozen=True)
class BatcherSettings:
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 256
    queue_timeout_us: int = 2_000_000
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0 or self.queue_timeout_us < 0:
            raise ValueError("max_queue_delay_us and queue_timeout_us must not be negative")
        if self.instances < 1:
            raise ValueError(f"instances must be at least 1, got {self.instances}")
        if self.max_queue_size < self.max_batch_size:
            raise ValueError(f"max_queue_size ({self.max_queue_size}) must be at least max_batch_size ({self.max_batch_size})")
        for size in self.preferred_batch_sizes:
            if not 1 <= size <= self.max_batch_size:
                raise ValueError(f"preferred batch size {size} is outside 1..max_batch_size ({self.max_batch_size})")


@dataclass
class BatchStats:
    """Counters in Triton's statistics vocabulary (ModelStatistics), nanoseconds."""

    success_count: int = 0
    failure_count: int = 0
    inference_count: int = 0  # items run
    execution_count: int = 0  # engine runs
    queue_ns: int = 0
    compute_ns: int = 0
    rejected_count: int = 0  # refused at the door (queue full) or after the queue timeout
    last_inference_ms: int = 0
    batch_sizes: dict[int, list[int]] = field(default_factory=dict)  # size -> [runs, compute ns]


@dataclass
class BatchRun:
    """What the engine callback receives and returns for one batch."""

    slot: Any
    inputs: np.ndarray
    outputs: tuple[str, ...] | None


@dataclass(eq=False)
class _Entry:
    slot: Any
    items: np.ndarray
    outputs: tuple[str, ...] | None
    future: asyncio.Future
    enqueued: float  # time.monotonic()
    expired: bool = False  # refused by its queue timeout while queued (no longer counted in the queue)

    @property
    def size(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class BatchResult:
    """One request's rows of a batch: outputs by name, the slot (version) that computed them, timings."""

    outputs: dict[str, np.ndarray]
    slot: Any
    queue_ns: int
    compute_ns: int
    batch_size: int


Observer = Callable[[int, int, int], None]  # (batch size, queue ns of the oldest request, compute ns)


class DynamicBatcher:
    """One queue and `instances` schedulers for one model.

    Args:
        run: called in an engine thread with (slot, batch, output names) -> {name: (N, ...) array}.
        settings: the batching policy.
        name: the model name, for messages.
        observe: called on the event loop after every engine run (metrics).
    """

    def __init__(self, run: Callable[[Any, np.ndarray, tuple[str, ...] | None], dict[str, np.ndarray]],
                 settings: BatcherSettings, name: str, observe: Observer | None = None) -> None:
        self.run = run
        self.settings = settings
        self.name = name
        self.observe = observe
        self.stats = BatchStats()
        self._queue: deque[_Entry] = deque()
        self._queued_items = 0
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(settings.instances, thread_name_prefix=f"engine-{name}")
        self._closing = False
        self._busy = 0  # engine runs in flight

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the schedulers on the running event loop (idempotent)."""
        if self._tasks:
            return
        self._wakeup = asyncio.Event()
        self._tasks = [asyncio.get_running_loop().create_task(self._schedule(), name=f"batcher-{self.name}-{i}")
                       for i in range(self.settings.instances)]

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop taking requests; wait up to `drain_seconds` for the queue to empty (requests let in
        and still decoding included: they hold reservations), then refuse the rest."""
        self._closing = True
        deadline = time.monotonic() + drain_seconds
        while (self._queued_items or self._queue or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        while self._queue:
            self._fail(self._queue.popleft(), QueueFull(f"model {self.name!r} is shutting down"))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued_items(self) -> int:
        return self._queued_items

    # ---- submitting ------------------------------------------------------------------------

    async def submit(self, slot: Any, items: np.ndarray, outputs: tuple[str, ...] | None = None,
                     reservation: Reservation | None = None) -> BatchResult:
        """Queue `items` (N, ...) for `slot`; returns their outputs. With the `reservation` taken for
        them at the door they are not checked for room again, unless they are more than it holds (an
        image cut into more tiles than it reserved); without one, they are checked now. Raises
        QueueFull at once when the queue cannot take them, QueueTimeout when they waited too long."""
        if not self._tasks:
            if self._closing:  # stopped: nothing would run it (a reservation from before the stop included)
                raise QueueFull(f"model {self.name!r} is shutting down")
            self.start()
        limit = self.settings.max_batch_size
        self._spend(len(items), reservation)
        if len(items) <= limit:
            return await self._enqueue(slot, items, outputs)
        # A request larger than a batch runs as several batches; all of it was admitted, or none.
        parts = [items[start:start + limit] for start in range(0, len(items), limit)]
        results = await asyncio.gather(*(self._enqueue(slot, part, outputs) for part in parts))
        names = results[0].outputs.keys()
        return BatchResult({n: np.concatenate([r.outputs[n] for r in results]) for n in names}, slot,
                           max(r.queue_ns for r in results), sum(r.compute_ns for r in results),
                           max(r.batch_size for r in results))

    def reserve(self, size: int) -> Reservation:
        """Take room for `size` items now, or raise QueueFull. Callers reserve before the costly part
        of a request (decoding its images or tensor) so that a refusal costs next to nothing under
        overload, and pass the reservation to `submit`. An empty queue always takes a request, however
        large, so nothing is refused forever."""
        self._check_room(size, self._queued_items)
        self._queued_items += size
        return Reservation(self, size)

    def _check_room(self, size: int, queued: int) -> None:
        """QueueFull when `size` more items, behind `queued`, would overflow the queue."""
        if self._closing:
            raise QueueFull(f"model {self.name!r} is shutting down")
        if queued and queued + size > self.settings.max_queue_size:
            self.stats.rejected_count += 1
            raise QueueFull(f"model {self.name!r} is at capacity ({queued} items queued, "
                            f"limit {self.settings.max_queue_size}); retry shortly")

    def _spend(self, size: int, reservation: Reservation | None) -> None:
        """Count `size` items as queued, spending what `reservation` holds: checked again only when
        they are more than it holds (then all of them must fit beside the rest of the queue)."""
        reserved = 0
        if reservation is not None and reservation.batcher is self:
            reserved, reservation.batcher = reservation.size, None
        if size > reserved:
            try:
                self._check_room(size, self._queued_items - reserved)
            except QueueFull:
                self._queued_items -= reserved
                raise
        self._queued_items += size - reserved

    async def _enqueue(self, slot, items, outputs) -> BatchResult:
        future = asyncio.get_running_loop().create_future()
        entry = _Entry(slot, items, outputs, future, time.monotonic())
        self._queue.append(entry)
        self._wakeup.set()
        timeout = self.settings.queue_timeout_us / 1e6
        # Refuse at the deadline itself, not when the next batch is formed (which, behind a long
        # engine run, can be much later): a timed-out request's answer is the point of the limit.
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, entry) if timeout else None
        try:
            return await future
        except asyncio.CancelledError:
            # The caller went away (client disconnect, deadline): drop the entry if it is still queued.
            if not future.done():
                future.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, entry: _Entry) -> None:
        """The entry's queue timeout passed: refuse it now if it is still waiting (not in a batch)."""
        if entry.future.done() or not any(queued is entry for queued in self._queue):
            return
        entry.expired = True
        self._queued_items -= entry.size
        self.stats.rejected_count += 1
        self._fail(entry, QueueTimeout(
            f"model {self.name!r}: the request waited {time.monotonic() - entry.enqueued:.2f} s in the queue "
            f"(limit {self.settings.queue_timeout_us / 1e6:g} s) and was not run; retry shortly"))

    # ---- scheduling --------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_batch()
            batch = self._take()
            if not batch:
                continue
            self._busy += 1
            started = time.monotonic()
            try:
                inputs = batch[0].items if len(batch) == 1 else None
                result = await loop.run_in_executor(self._executor, self._execute, batch, inputs)
            except Exception as error:  # the engine failed: every request of the batch fails with it
                logger.exception("model %s: engine run failed for a batch of %d", self.name, sum(e.size for e in batch))
                for entry in batch:
                    self.stats.failure_count += 1
                    self._fail(entry, error)
                continue
            finally:
                self._busy -= 1
            compute_ns = int((time.monotonic() - started) * 1e9)
            self._deliver(batch, result, compute_ns, started)

    async def _wait_for_batch(self) -> None:
        """With a queue delay, hold an under-full batch until the oldest request has waited that long
        or a full (or preferred) batch has formed."""
        delay = self.settings.max_queue_delay_us / 1e6
        if delay <= 0:
            return
        while self._queue:
            available = sum(e.size for e in self._queue if not e.future.done())
            if available >= self.settings.max_batch_size or available in self.settings.preferred_batch_sizes:
                return
            remaining = self._queue[0].enqueued + delay - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Entry]:
        """The oldest live requests of one slot, up to max_batch_size items (cut back to the largest
        preferred size they fill, when preferred sizes are set)."""
        now = time.monotonic()
        timeout = self.settings.queue_timeout_us / 1e6
        batch: list[_Entry] = []
        items = 0
        while self._queue:
            entry = self._queue[0]
            if entry.future.done():  # cancelled by its caller, or refused by its timeout, while queued
                self._queue.popleft()
                if not entry.expired:
                    self._queued_items -= entry.size
                continue
            if timeout and now - entry.enqueued > timeout:
                self._queue.popleft()
                self._queued_items -= entry.size
                self.stats.rejected_count += 1
                self._fail(entry, QueueTimeout(
                    f"model {self.name!r}: the request waited {now - entry.enqueued:.2f} s in the queue "
                    f"(limit {timeout:g} s) and was not run; retry shortly"))
                continue
            if batch and (entry.slot is not batch[0].slot or items + entry.size > self.settings.max_batch_size):
                break
            self._queue.popleft()
            self._queued_items -= entry.size
            batch.append(entry)
            items += entry.size
        preferred = [s for s in self.settings.preferred_batch_sizes if s <= items]
        if preferred and len(batch) > 1 and items not in self.settings.preferred_batch_sizes:
            target = max(preferred)
            kept, count = [], 0
            for entry in batch:
                if count + entry.size > target and kept:
                    break
                kept.append(entry)
                count += entry.size
            for entry in reversed(batch[len(kept):]):  # back to the head of the queue, in order
                self._queue.appendleft(entry)
                self._queued_items += entry.size
            batch = kept
        return batch

    def _execute(self, batch: list[_Entry], single: np.ndarray | None) -> dict[str, np.ndarray]:
        """In an engine thread: one engine run for the whole batch."""
        inputs = single if single is not None else np.concatenate([entry.items for entry in batch])
        wanted = batch[0].outputs
        if any(entry.outputs != wanted for entry in batch[1:]):
            wanted = None  # requests asked for different outputs: compute all, each gets its own
        return self.run(batch[0].slot, inputs, wanted)

    def _deliver(self, batch: list[_Entry], result: dict[str, np.ndarray], compute_ns: int, started: float) -> None:
        size = sum(entry.size for entry in batch)
        stats = self.stats
        stats.execution_count += 1
        stats.inference_count += size
        stats.compute_ns += compute_ns
        stats.last_inference_ms = int(time.time() * 1000)
        runs = stats.batch_sizes.setdefault(size, [0, 0])
        runs[0] += 1
        runs[1] += compute_ns
        start = 0
        oldest_wait = 0
        for entry in batch:
            stop = start + entry.size
            queue_ns = int((started - entry.enqueued) * 1e9)
            oldest_wait = max(oldest_wait, queue_ns)
            stats.queue_ns += queue_ns
            if not entry.future.done():
                stats.success_count += 1
                outputs = {name: value[start:stop] for name, value in result.items()
                           if entry.outputs is None or name in entry.outputs}
                entry.future.set_result(BatchResult(outputs, entry.slot, queue_ns, compute_ns, size))
            start = stop
        if self.observe is not None:
            self.observe(size, oldest_wait, compute_ns)

    @staticmethod
    def _fail(entry: _Entry, error: Exception) -> None:
        if not entry.future.done():
            entry.future.set_exception(error)
