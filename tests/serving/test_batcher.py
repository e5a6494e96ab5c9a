"""The dynamic batcher (serving/batcher.py) on its own: a fake engine that records every batch, and
a gate that holds the engine busy so tests decide exactly what is queued when the next batch forms."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from visionzoo.serving.batcher import BatcherSettings, DynamicBatcher, QueueFull, QueueTimeout


class FakeEngine:
    """Doubles its input; records (slot, batch size) per run; `hold()` blocks runs until `release()`."""

    def __init__(self) -> None:
        self.runs: list[tuple[object, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_next = False

    def hold(self) -> None:
        self.gate.clear()
        self.started.clear()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, slot, batch: np.ndarray, outputs):
        self.started.set()
        self.gate.wait(10)
        self.runs.append((slot, len(batch)))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("engine exploded")
        return {"double": batch * 2, "rows": np.arange(len(batch))[:, None]}


def items(count: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)[:, None]


async def wait_until(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def occupy(batcher: DynamicBatcher, engine: FakeEngine, slot="v1"):
    """Start one request and wait until the engine is busy with it (held at the gate)."""
    engine.hold()
    first = asyncio.ensure_future(batcher.submit(slot, items(1, 1000)))
    await asyncio.to_thread(engine.started.wait, 5)
    return first


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_a_batch_and_each_gets_its_rows():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=16), "m")
        first = await occupy(batcher, engine)
        waiting = [asyncio.ensure_future(batcher.submit("v1", items(2, 10 * i))) for i in range(5)]
        await wait_until(lambda: batcher.queued_items == 10)
        engine.release()
        results = await asyncio.gather(first, *waiting)
        await batcher.stop()
        return engine, results

    engine, results = run(scenario())
    assert [size for _, size in engine.runs] == [1, 10]  # the five queued requests ran as one batch
    for i, result in enumerate(results[1:]):
        np.testing.assert_array_equal(result.outputs["double"], items(2, 10 * i) * 2)
        assert result.batch_size == 10 and result.slot == "v1"


def test_batches_never_exceed_the_maximum_and_large_requests_are_split_and_reassembled():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=4, max_queue_size=64), "m")
        first = await occupy(batcher, engine)
        large = asyncio.ensure_future(batcher.submit("v1", items(10)))
        smalls = [asyncio.ensure_future(batcher.submit("v1", items(3, 100 + i))) for i in range(2)]
        await wait_until(lambda: batcher.queued_items == 16)
        engine.release()
        await first
        result = await large
        await asyncio.gather(*smalls)
        await batcher.stop()
        return engine, result

    engine, result = run(scenario())
    assert max(size for _, size in engine.runs) <= 4
    np.testing.assert_array_equal(result.outputs["double"], items(10) * 2)


def test_a_full_queue_refuses_at_once_and_an_empty_queue_takes_any_request():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=4, max_queue_size=8), "m")
        first = await occupy(batcher, engine)
        queued = asyncio.ensure_future(batcher.submit("v1", items(6)))
        await wait_until(lambda: batcher.queued_items == 6)
        with pytest.raises(QueueFull, match="at capacity"):
            await batcher.submit("v1", items(3))
        engine.release()
        await asyncio.gather(first, queued)
        alone = await batcher.submit("v1", items(20))  # larger than the queue, but the queue is empty
        await batcher.stop()
        return batcher, alone

    batcher, alone = run(scenario())
    assert batcher.stats.rejected_count == 1 and len(alone.outputs["double"]) == 20


def test_requests_past_the_queue_timeout_are_refused_not_run():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=4, queue_timeout_us=20_000), "m")
        first = await occupy(batcher, engine)
        late = asyncio.ensure_future(batcher.submit("v1", items(1)))
        await asyncio.sleep(0.1)  # five times the queue timeout, while the engine is busy
        engine.release()
        await first
        with pytest.raises(QueueTimeout, match="waited"):
            await late
        await batcher.stop()
        return engine

    engine = run(scenario())
    assert [size for _, size in engine.runs] == [1]  # the timed-out request never reached the engine


def test_a_lone_request_after_a_burst_runs_at_once_in_a_batch_of_one():
    """No state learned from the burst holds the next request back: with no queue delay a request
    that finds the queue empty is dispatched alone, immediately."""

    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=32), "m")
        first = await occupy(batcher, engine)
        burst = [asyncio.ensure_future(batcher.submit("v1", items(1, i))) for i in range(64)]
        await wait_until(lambda: batcher.queued_items == 64)
        engine.release()
        await asyncio.gather(first, *burst)
        engine.runs.clear()
        lone = await batcher.submit("v1", items(1))
        await batcher.stop()
        return engine, lone

    engine, lone = run(scenario())
    assert engine.runs == [("v1", 1)] and lone.batch_size == 1


def test_the_queue_delay_waits_for_more_requests_and_preferred_sizes_cut_batches():
    async def scenario():
        engine = FakeEngine()
        settings = BatcherSettings(max_batch_size=16, max_queue_delay_us=200_000, preferred_batch_sizes=(4,))
        batcher = DynamicBatcher(engine, settings, "m")
        staggered = []
        for i in range(6):
            staggered.append(asyncio.ensure_future(batcher.submit("v1", items(1, i))))
            await asyncio.sleep(0.005)
        await asyncio.gather(*staggered)
        await batcher.stop()
        return engine

    engine = run(scenario())
    sizes = [size for _, size in engine.runs]
    assert sizes[0] == 4 and sum(sizes) == 6  # held for the preferred size, not dispatched one by one


def test_requests_of_two_versions_never_share_a_batch():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=16), "m")
        first = await occupy(batcher, engine)
        old = [asyncio.ensure_future(batcher.submit("v1", items(1))) for _ in range(3)]
        new = [asyncio.ensure_future(batcher.submit("v2", items(1))) for _ in range(3)]
        await wait_until(lambda: batcher.queued_items == 6)
        engine.release()
        results = await asyncio.gather(first, *old, *new)
        await batcher.stop()
        return engine, results

    engine, results = run(scenario())
    assert engine.runs == [("v1", 1), ("v1", 3), ("v2", 3)]
    assert [r.slot for r in results[1:]] == ["v1"] * 3 + ["v2"] * 3


def test_cancelled_requests_are_skipped_and_an_engine_failure_fails_only_its_batch():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=16), "m")
        first = await occupy(batcher, engine)
        gone = asyncio.ensure_future(batcher.submit("v1", items(5)))
        kept = asyncio.ensure_future(batcher.submit("v1", items(2)))
        await wait_until(lambda: batcher.queued_items == 7)
        gone.cancel()
        engine.fail_next = True
        engine.release()
        with pytest.raises(RuntimeError, match="exploded"):
            await first
        after = await kept
        await batcher.stop()
        return engine, after

    engine, after = run(scenario())
    assert [size for _, size in engine.runs] == [1, 2]  # the cancelled request never ran
    np.testing.assert_array_equal(after.outputs["double"], items(2) * 2)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_queue_size"):
        BatcherSettings(max_batch_size=32, max_queue_size=8)
    with pytest.raises(ValueError, match="preferred"):
        BatcherSettings(max_batch_size=8, preferred_batch_sizes=(16,))


def test_an_environment_batch_size_resizes_the_manifests_queue(monkeypatch):
    """models.yaml sizes Mars's queue (6 tiles) for its batch of 1; VISIONZOO_MAX_BATCH_SIZE=32 alone
    must not leave a queue smaller than a batch (which the service would refuse to start with)."""
    from visionzoo.serving import config

    try:
        config.reload()
        assert config.served_models()["mars"].batcher.max_queue_size == 6
        monkeypatch.setenv("VISIONZOO_MAX_BATCH_SIZE", "32")
        config.reload()
        assert config.served_models()["mars"].batcher.max_queue_size == 8 * 32
        monkeypatch.setenv("VISIONZOO_MARS_MAX_QUEUE_SIZE", "40")
        config.reload()
        assert config.served_models()["mars"].batcher.max_queue_size == 40
    finally:
        monkeypatch.undo()
        config.reload()


def test_a_request_let_in_before_a_stop_is_served_in_the_drain_and_one_after_it_is_refused():
    async def scenario(drain_seconds):
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=4, max_queue_size=8), "m")
        await batcher.submit("v1", items(1))  # started
        decoding = batcher.reserve(2)  # let in, still decoding when the stop begins
        stopping = asyncio.ensure_future(batcher.stop(drain_seconds))
        await asyncio.sleep(0.05)
        try:
            return await batcher.submit("v1", items(2, 10), reservation=decoding), stopping.done()
        except QueueFull as error:
            decoding.release()  # what the caller's `with` does
            return error, stopping.done()
        finally:
            await asyncio.wait_for(stopping, 5)
            with pytest.raises(QueueFull, match="shutting down"):
                batcher.reserve(1)
            assert batcher._tasks == [] and batcher.queued_items == 0  # not restarted by a late submit

    served, stopped_before = run(scenario(drain_seconds=5))
    assert not stopped_before  # the drain waited for the reserved request
    np.testing.assert_array_equal(served.outputs["double"], items(2, 10) * 2)
    refused, stopped_before = run(scenario(drain_seconds=0))  # the stop is over before it submits
    assert stopped_before and isinstance(refused, QueueFull) and "shutting down" in str(refused)


def test_a_reservation_holds_room_from_the_door_until_submit_spends_it():
    async def scenario():
        engine = FakeEngine()
        batcher = DynamicBatcher(engine, BatcherSettings(max_batch_size=4, max_queue_size=8), "m")
        batcher.reserve(100).release()  # an empty queue takes any request
        assert batcher.queued_items == 0
        first = await occupy(batcher, engine)
        decoding = batcher.reserve(6)  # counted at once, before the request's items exist
        assert batcher.queued_items == 6
        with pytest.raises(QueueFull, match="at capacity"):
            batcher.reserve(3)  # the queue itself is empty, but 6 of its 8 places are taken
        with batcher.reserve(2):  # a request that fails while decoding gives its room back
            assert batcher.queued_items == 8
        assert batcher.queued_items == 6
        queued = asyncio.ensure_future(batcher.submit("v1", items(6), reservation=decoding))
        await wait_until(lambda: len(batcher._queue) == 2)  # two batches of at most 4
        assert batcher.queued_items == 6  # spent, not counted twice
        decoding.release()  # nothing left to give back
        assert batcher.queued_items == 6
        tiles = batcher.reserve(1)  # one file ...
        with pytest.raises(QueueFull, match="at capacity"):
            await batcher.submit("v1", items(3), reservation=tiles)  # ... cut into 3 tiles: 2 more do not fit
        assert batcher.queued_items == 6
        engine.release()
        await asyncio.gather(first, queued)
        assert batcher.queued_items == 0
        await batcher.stop()
        with pytest.raises(QueueFull, match="shutting down"):
            batcher.reserve(1)
        return batcher

    assert run(scenario()).stats.rejected_count == 2
