"""Distribution and precision through the real training path (`visionzoo.training.train.run_training`):

- `--strategy mirrored`: the CPU split into two logical devices (in a subprocess, since the split
  must happen before TensorFlow initialises and would leak into other tests), two replicas.
- `--strategy multiworker`: two worker processes on loopback with TF_CONFIG train a few steps
  and must end with identical weights in one run folder (the chief's name, though the workers
  start seconds apart); the non-chief leaves no files behind.
- `--precision mixed_float16 | mixed_bfloat16`: the model computes in half precision with a
  float32 output, float16 gets a LossScaleOptimizer, and a training step gives a finite loss.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from visionzoo.training.data import synthetic as writers

REPO = Path(__file__).resolve().parents[2]
MODEL = "cifar10_ablation_base"
# Runs one training in a fresh interpreter; the model run_training builds is captured so its final
# weights can be written out (run_training itself returns only the run folder).
WORKER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import visionzoo.training
    import tensorflow as tf

    data_dir, out, weights_path, strategy, devices = sys.argv[1:6]
    delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    if int(devices) > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(devices))
    from visionzoo.training import train

    captured = {}
    compile_model = train.compile_model

    def capture(model, prepared):
        captured["model"] = model
        compile_model(model, prepared)

    train.compile_model = capture
    prepare = train.prepare

    def late_prepare(config):
        time.sleep(delay)
        return prepare(config)

    train.prepare = late_prepare
    config = train.resolve_config("__MODEL__", data_dir, {"smoke": True, "strategy": strategy, "out": out, "steps_per_epoch": 3,
                                                    "batch_size": 8, "data_options.validation": "fraction:0.2"})
    run_dir = train.run_training(config)
    model = captured["model"]
    np.savez(weights_path, *[np.asarray(w) for w in model.get_weights()])
    print(json.dumps({"run_dir": str(run_dir), "replicas": model.distribute_strategy.num_replicas_in_sync}))
""").replace("__MODEL__", MODEL)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return writers.write_cifar_pickle(tmp_path_factory.mktemp("cifar"), per_batch=16, test=16)


def _worker(script: Path, args: list[str], env: dict | None = None) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    environment.update({"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    return subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: int = 300) -> dict:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"worker timed out; stderr tail:\n{err[-3000:]}")
    assert process.returncode == 0, f"worker failed ({process.returncode}); stderr tail:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def test_mirrored_strategy_trains_on_two_logical_cpus(cifar, script, tmp_path):
    result = _finish(_worker(script, [str(cifar), str(tmp_path / "runs"), str(tmp_path / "w.npz"), "mirrored", "2"]))
    assert result["replicas"] == 2
    training = json.loads((Path(result["run_dir"]) / "training.json").read_text())
    assert training["strategy"] == "mirrored" and training["replicas"] == 2
    assert (Path(result["run_dir"]) / "metrics.json").is_file()


def test_multiworker_strategy_keeps_two_workers_in_lockstep(cifar, script, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    runs = tmp_path / "runs"
    processes = [  # the second worker reads its data (and then its clock) 1.2 s later than the first
        _worker(script, [str(cifar), str(runs), str(tmp_path / f"worker{index}.npz"), "multiworker", "1", str(1.2 * index)],
                env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index in range(2)
    ]
    results = [_finish(process) for process in processes]
    assert [r["replicas"] for r in results] == [2, 2]
    # one run folder for the cluster: the chief's name, which the --resume backup of every worker lives under
    assert results[0]["run_dir"] == results[1]["run_dir"]
    chief, other = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert len(chief.files) == len(other.files) > 0
    for key in chief.files:
        np.testing.assert_array_equal(chief[key], other[key], err_msg=f"weight {key} differs between workers")
    # the chief wrote the run folder; the other worker's temporary folder is gone
    assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == [Path(results[0]["run_dir"]).name]
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
    assert json.loads((Path(results[0]["run_dir"]) / "training.json").read_text())["replicas"] == 2


@pytest.fixture
def compiled(monkeypatch) -> dict:
    """Filled with the model run_training compiles, as {"model": model}."""
    from visionzoo.training import train

    captured = {}
    compile_model = train.compile_model

    def capture(model, prepared):
        captured["model"] = model
        compile_model(model, prepared)

    monkeypatch.setattr(train, "compile_model", capture)
    return captured


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_through_run_training(precision, cifar, tmp_path, compiled):
    import tf_keras as keras

    from visionzoo.training import train

    config = train.resolve_config(MODEL, str(cifar), {"smoke": True, "precision": precision, "out": str(tmp_path),
                                                      "steps_per_epoch": 1, "data_options.validation": "fraction:0.2"})
    try:
        run_dir = train.run_training(config)
    finally:
        train.set_precision("float32")
    model = compiled["model"]
    half = precision.removeprefix("mixed_")
    assert model.get_layer("conv_1").compute_dtype == half
    assert model.get_layer("probabilities").compute_dtype == "float32"  # softmax stays in float32
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer) == (precision == "mixed_float16")
    history = (run_dir / "history.csv").read_text().splitlines()
    loss = float(history[1].split(",")[history[0].split(",").index("loss")])
    assert np.isfinite(loss)
    assert json.loads((run_dir / "config.json").read_text())["precision"] == precision


def test_jit_compiles_the_train_step(cifar, tmp_path, compiled):
    from visionzoo.training import train

    config = train.resolve_config(MODEL, str(cifar), {"smoke": True, "jit": True, "out": str(tmp_path), "steps_per_epoch": 1,
                                                      "data_options.validation": "fraction:0.2"})
    run_dir = train.run_training(config)
    assert compiled["model"]._jit_compile is True  # XLA-compiled train step (tf-keras keeps the flag here)
    assert (run_dir / "metrics.json").is_file()
