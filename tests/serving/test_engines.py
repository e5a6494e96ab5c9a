"""The engines behind the service.

ONNX Runtime and OpenVINO must answer alike for every served model at every batch shape the batcher
sends: batch 1 and the largest batch (OpenVINO's static-shape copies, cloned from one read of the
file) and any size in between (its dynamic model). `choose` races the two on a CPU, keeps the
winner in its cache file, reads it back on the next start, and falls back to the engine that loads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest

from visionzoo.serving import config, engines, repository
from visionzoo.serving.engines import EngineRequest, EngineUnavailable, build, choose, needs_race
from visionzoo.serving.processing import Limits, Upload, decode_upload
from visionzoo.serving.repository import load_served

SERVED = tuple(config.served_models())


def _request(version) -> EngineRequest:
    return EngineRequest(version.onnx_path, version.inputs[0]["name"], tuple(o["name"] for o in version.outputs))


def _golden_batch(version, size: int) -> np.ndarray:
    """`size` model inputs cut from the version's golden images, decoded as the service decodes uploads."""
    files = [version.folder / "golden" / name for name in version.metadata["golden"]["files"]]
    tiles = np.concatenate([decode_upload(Upload(f.name, f.read_bytes()), version.spec, Limits())[0].tiles for f in files])
    return tiles[np.arange(size) % len(tiles)]


@pytest.mark.parametrize("name", SERVED)
def test_openvino_answers_as_onnx_runtime_at_every_batch_shape(name):
    version = load_served(name)
    largest = config.served_models()[name].batcher.max_batch_size
    sizes = (1, largest)
    reference = build("onnxruntime", _request(version))
    openvino = build("openvino", _request(version), sizes=sizes)
    try:
        for size in sorted({1, 3, largest}):  # 3: no static copy, the dynamic model answers
            batch = _golden_batch(version, size)
            expected, found = reference.run(batch), openvino.run(batch)
            for output in version.outputs:
                key = output["name"]
                assert found[key].shape == expected[key].shape, (key, size)
                np.testing.assert_allclose(found[key], expected[key], atol=version.golden_tolerance(key),
                                           err_msg=f"{name} output {key} at batch {size}")
    finally:
        reference.close()
        openvino.close()


@pytest.mark.parametrize("name", SERVED)
def test_deferred_static_shapes_answer_alike_before_and_after_they_compile(name):
    version = load_served(name)
    largest = config.served_models()[name].batcher.max_batch_size
    eager = build("openvino", _request(version), sizes=(1, largest))
    deferred = build("openvino", _request(version), sizes=(1, largest), defer=True)
    try:
        assert eager.describe()["pending_batch_sizes"] == []
        assert deferred.describe()["pending_batch_sizes"] == sorted({1, largest})
        assert deferred.sizes_to_warm((1, largest)) == (1,)
        # batch 2 has no static copy (no served model has 2 as its largest): after finish_loading
        # the dynamic model answers it from memory it frees once the static copies serve
        batches = {size: _golden_batch(version, size) for size in sorted({1, largest, 2})}
        expected = {size: eager.run(batch) for size, batch in batches.items()}
        for _ in ("dynamic model", "static copies, and the dynamic model after releasing its memory"):
            for size, batch in batches.items():
                found = deferred.run(batch)
                for key in expected[size]:
                    np.testing.assert_allclose(found[key], expected[size][key], atol=version.golden_tolerance(key))
            deferred.finish_loading()
        described = deferred.describe()
        assert described["pending_batch_sizes"] == [] and described["static_batch_sizes"] == sorted({1, largest})
        deferred.finish_loading()  # nothing left: returns at once
    finally:
        eager.close()
        deferred.close()
    deferred.finish_loading()  # closed: compiles nothing
    assert deferred.describe()["static_batch_sizes"] == []


@pytest.fixture
def race_setup(monkeypatch, tmp_path):
    """The X-ray model (the quickest to compile) and an engine cache of its own for the test."""
    cache = tmp_path / "engine-choice.json"
    monkeypatch.setenv("VISIONZOO_ENGINE_CACHE", str(cache))
    version = load_served("mura")
    request = _request(version)

    def sample(size: int) -> np.ndarray:
        return _golden_batch(version, size)

    return request, sample, cache


def test_auto_races_once_then_starts_from_the_cache(race_setup):
    request, sample, cache = race_setup
    sizes = (1, 2)
    assert needs_race(request, "auto", "cpu", sizes)
    engine, info = choose(request, "auto", "cpu", "fp32", sample, sizes)
    engine.close()
    assert info["chosen_by"] == "the faster on this CPU (race at start-up)"
    assert set(info["race_us_per_image"]) == {"onnxruntime", "openvino"}
    race = info["race_us_per_image"]
    expected = "openvino" if race["openvino"] < race["onnxruntime"] * (1 - engines.OPENVINO_MARGIN) else "onnxruntime"
    assert engine.kind == expected, race
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["engine"] == engine.kind
    assert not needs_race(request, "auto", "cpu", sizes)
    assert needs_race(request, "auto", "cpu", (1, 4))  # another batch size is another race
    again, info = choose(request, "auto", "cpu", "fp32", sample, sizes)
    again.close()
    assert again.kind == engine.kind and info["chosen_by"] == "the faster on this CPU (cached race)"


def test_the_cache_is_keyed_by_the_verified_digest_without_hashing_the_file_again(race_setup, monkeypatch):
    request, _, _ = race_setup
    version = load_served("mura")
    recorded = version.file_sha256(request.onnx_path)
    assert recorded == repository.sha256(request.onnx_path)
    from_file = engines.cache_key(request, (1,))
    hashed = []
    monkeypatch.setattr(engines, "sha256", lambda path: hashed.append(path) or "")
    given = dataclasses.replace(request, sha256=recorded)
    assert engines.cache_key(given, (1,)) == from_file and hashed == []
    other = dataclasses.replace(request, sha256="0" * 64)  # another file's digest: another race
    assert engines.cache_key(other, (1,)) != from_file


@pytest.mark.parametrize("content", ["[]", "{not json", '{"x": 1}', '"a string"'])
def test_a_cache_file_that_holds_no_race_is_raced_over_and_rewritten(race_setup, content):
    request, sample, cache = race_setup
    cache.write_text(content)
    assert needs_race(request, "auto", "cpu", (1,))
    engine, info = choose(request, "auto", "cpu", "fp32", sample, (1,))
    engine.close()
    assert info["chosen_by"] == "the faster on this CPU (race at start-up)"
    assert any(entry.get("engine") == engine.kind for entry in json.loads(cache.read_text()).values()
               if isinstance(entry, dict))
    assert list(cache.parent.glob("*.tmp")) == []


def test_cache_off_races_every_time_and_writes_nothing(race_setup, monkeypatch):
    request, sample, cache = race_setup
    monkeypatch.setenv("VISIONZOO_ENGINE_CACHE", "off")
    engine, info = choose(request, "auto", "cpu", "fp32", sample, (1,))
    engine.close()
    assert info["chosen_by"] == "the faster on this CPU (race at start-up)"
    assert needs_race(request, "auto", "cpu", (1,)) and not cache.exists()


def test_an_engine_that_crashes_on_the_model_loses_the_race(race_setup, monkeypatch):
    request, sample, _ = race_setup
    real_build = engines.build

    def openvino_crashes(kind, *args, **kwargs):
        if kind == "openvino":
            raise RuntimeError("simulated compiler crash")
        return real_build(kind, *args, **kwargs)

    monkeypatch.setattr(engines, "build", openvino_crashes)
    engine, info = choose(request, "auto", "cpu", "fp32", sample, (1,))
    engine.close()
    assert engine.kind == "onnxruntime" and info["chosen_by"] == "the only engine that loads here"
    assert "simulated compiler crash" in info["unavailable"]["openvino"]


def test_an_engine_named_by_the_operator_is_used_without_a_race(race_setup):
    request, sample, cache = race_setup
    assert not needs_race(request, "openvino", "cpu", (1,))
    engine, info = choose(request, "openvino", "cpu", "fp32", sample, (1,))
    engine.close()
    assert engine.kind == "openvino" and info["chosen_by"] == "VISIONZOO_ENGINE=openvino" and not cache.exists()


def test_unknown_engines_and_devices_are_refused_by_name(race_setup):
    request, sample, _ = race_setup
    with pytest.raises(EngineUnavailable, match="unknown engine 'tensorrt'; expected one of auto, onnxruntime, openvino"):
        build("tensorrt", request)
    with pytest.raises(EngineUnavailable, match="device must be auto, cuda or cpu, got 'tpu'"):
        choose(request, "auto", "tpu", "fp32", sample, (1,))
    with pytest.raises(EngineUnavailable, match="openvino runs on the CPU"):
        build("openvino", request, "cuda")


def test_a_cache_that_cannot_be_written_only_means_racing_again(race_setup, monkeypatch, tmp_path):
    request, sample, _ = race_setup
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("VISIONZOO_ENGINE_CACHE", str(blocked / "engine-choice.json"))
    engine, info = choose(request, "auto", "cpu", "fp32", sample, (1,))
    engine.close()
    assert info["chosen_by"] == "the faster on this CPU (race at start-up)"
    assert needs_race(request, "auto", "cpu", (1,))
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # no cache and no temporary file left


def _model_set_with(monkeypatch, engine: str):
    """The service's set of models, with the blood-cell model only, on `engine`."""
    from concurrent.futures import ThreadPoolExecutor

    from visionzoo.serving.pipeline import ModelSet, ServedModel

    monkeypatch.setenv("VISIONZOO_ENGINE", engine)
    config.reload()
    server, pool = config.server_settings(), ThreadPoolExecutor(1)
    return ModelSet({"bloodcell": ServedModel(config.served_models()["bloodcell"], server, pool)}, server, pool)


async def _until(condition, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_the_service_is_ready_before_openvino_compiles_its_static_shapes_and_uses_them_after(monkeypatch):
    models = _model_set_with(monkeypatch, "openvino")
    version = load_served("bloodcell")
    largest = config.served_models()["bloodcell"].batcher.max_batch_size
    try:
        async def scenario():
            await models.start()
            model = models["bloodcell"]
            # ready at once; the static copies compile afterwards (no await since start: none has begun)
            assert models.ready() and model.status()["pending_batch_sizes"] == config.server_settings().warmup_sizes(largest)
            first = await model.infer(_golden_batch(version, 4))  # answered whatever is compiled by now
            await _until(lambda: model.status()["pending_batch_sizes"] == [])
            assert model.status()["static_batch_sizes"] == config.server_settings().warmup_sizes(largest)
            again = await model.infer(_golden_batch(version, 4))
            await models.stop()
            return first.outputs, again.outputs

        first, again = asyncio.run(scenario())
        for key in first:
            np.testing.assert_allclose(first[key], again[key], atol=version.golden_tolerance(key))
    finally:
        monkeypatch.undo()
        config.reload()


def test_a_deferred_compile_that_fails_leaves_the_model_serving(monkeypatch, caplog):
    from visionzoo.serving.engines.openvino import OpenVINOEngine

    def broken(self):
        raise EngineUnavailable("openvino cannot compile model.onnx at batch 32: simulated")

    models = _model_set_with(monkeypatch, "openvino")
    monkeypatch.setattr(OpenVINOEngine, "finish_loading", broken)
    version = load_served("bloodcell")
    try:
        async def scenario():
            await models.start()
            await models._finishing
            model = models["bloodcell"]
            result = await model.infer(_golden_batch(version, 2))
            status = model.status()
            await models.stop()
            return status, result

        status, result = asyncio.run(scenario())
        assert status["state"] == "ready" and status["pending_batch_sizes"]
        assert result.outputs["probabilities"].shape[0] == 2
        assert "keeps its first engine setup: openvino cannot compile model.onnx at batch 32: simulated" in caplog.text
    finally:
        monkeypatch.undo()
        config.reload()


# Three OpenVINO engines of one model, built on three threads and run for the first time at once,
# in a fresh process (the bindings' statics are set up once per process): what the service's
# parallel model loading does at start-up.
_FIRST_RUNS_AT_ONCE = """
import os, sys, threading
import numpy as np
from visionzoo.serving.engines import build
from visionzoo.serving.engines.base import EngineRequest
from visionzoo.serving.repository import load_served
version = load_served("bloodcell")
(tensor,) = version.inputs
request = EngineRequest(version.onnx_path, tensor["name"], tuple(o["name"] for o in version.outputs))
together = threading.Barrier(3)
def first_run():
    engine = build("openvino", request, defer=True)
    together.wait()
    engine.run(np.zeros((1, *tensor["shape"][1:]), np.float32))
threads = [threading.Thread(target=first_run, daemon=True) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("ok", flush=True)
os._exit(0)
"""


def test_openvino_engines_started_on_parallel_threads_do_not_deadlock(models_dir):
    """Without `prime_bindings`, 3 of 30 such processes hung for good (every thread waiting for the
    GIL, one holding it inside a C++ static's guard) and `bentoml serve` twice never became ready;
    with it, none of 60. Eight fresh processes here, each given 60 s."""
    import subprocess
    import sys

    for _ in range(8):
        done = subprocess.run([sys.executable, "-c", _FIRST_RUNS_AT_ONCE], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
