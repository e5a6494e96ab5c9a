"""The callbacks a training run fits with: the recipe's (early stopping, learning-rate plateaus), the
best checkpoint (of the averaged network when the optimizer keeps one), history.csv and status.json
per epoch, the --resume backup and TensorBoard."""

from __future__ import annotations

import time
from pathlib import Path

from . import runs
from .recipe import Recipe, TrainConfig


def _best_so_far(rows: list[dict], monitor: str, mode: str) -> float | None:
    """The best `monitor` value in earlier epochs (so a resumed ModelCheckpoint keeps the real best)."""
    values = [float(row[monitor]) for row in rows if row.get(monitor) not in (None, "")]
    if not values:
        return None
    if mode == "auto":  # ModelCheckpoint's own rule
        mode = "max" if "acc" in monitor or monitor.startswith("fmeasure") else "min"
    return max(values) if mode == "max" else min(values)


def _run_callbacks(run_dir: Path, backup_dir: Path | None, chief: bool) -> list:
    """history.csv and status.json per epoch, and the backup for --resume, in that order: a kill
    between them at worst repeats the last epoch, whose history row is then replaced, never doubled."""
    import tf_keras as keras

    history_path = run_dir / "history.csv"

    class EpochHistory(keras.callbacks.Callback):
        """CSVLogger's columns, rewritten atomically each epoch and keyed by epoch, so a resumed run
        keeps its earlier rows."""

        def on_train_begin(self, logs=None):
            self.rows, self.first = runs.read_history(history_path), True

        def on_epoch_begin(self, epoch, logs=None):
            if self.first:  # fit starts at the restored epoch: drop rows from any later, lost attempt
                self.rows, self.first = [r for r in self.rows if int(r["epoch"]) < epoch], False

        def on_epoch_end(self, epoch, logs=None):
            self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
            runs.write_history(history_path, self.rows)

    class EpochStatus(keras.callbacks.Callback):
        """epochs_completed and seconds_trained (fitting time up to that epoch, over every attempt
        of a resumed run) after each epoch."""

        def on_train_begin(self, logs=None):
            self.earlier, self.started = runs.read_status(run_dir).get("seconds_trained", 0.0), time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            runs.write_status(run_dir, runs.UNFINISHED, epochs_completed=epoch + 1,
                              seconds_trained=round(self.earlier + time.perf_counter() - self.started, 1))

    backup = [] if backup_dir is None else [
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", delete_checkpoint=False)]
    return [EpochHistory(), *backup] + ([EpochStatus()] if chief else [])


def moving_average_callbacks() -> tuple:
    """Two callbacks for an optimizer with `use_ema`: the first puts its exponential moving average
    of the weights into the model for each validation pass and at each epoch's end, the second takes
    it out again. Placed around ModelCheckpoint, validation scores and the best checkpoint are the
    averaged network's while training steps, history and the --resume backup keep the raw one.
    (tf-keras only averages; `fit` copies the average in once, after the last epoch. Keras 3's
    SwapEMAWeights does the same swap.)"""
    import tensorflow as tf
    import tf_keras as keras

    state = {"inside": False}

    def swap(model, inside: bool) -> None:
        if state["inside"] == inside:
            return
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under a loss scale
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if averages is None:  # not built yet: no step taken, nothing averaged
            return
        for variable in model.trainable_variables:
            average = averages[optimizer._index_dict[optimizer._var_key(variable)]]
            raw = tf.identity(variable)
            variable.assign(average)
            average.assign(raw)
        state["inside"] = inside

    class PutAverageIn(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            swap(self.model, True)

        def on_test_end(self, logs=None):
            swap(self.model, False)

        def on_epoch_end(self, epoch, logs=None):
            swap(self.model, True)

    class TakeAverageOut(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            swap(self.model, False)

    return PutAverageIn(), TakeAverageOut()


def make_callbacks(recipe: Recipe, config: TrainConfig, run_dir: Path, checkpoint: Path, chief: bool = True,
                   backup_dir: Path | None = None) -> list:
    """The recipe's callbacks, then best checkpoint, history, status, backup (when `backup_dir`)
    and TensorBoard. `run_dir` is this process's folder (a worker's own one off the chief)."""
    import tf_keras as keras

    callbacks = []
    monitor, mode = "val_loss", "min"
    for spec in config.callbacks:
        options = dict(spec)
        kind = options.pop("type")
        if "monitor" in options:
            options["monitor"] = recipe.task.monitor(options["monitor"])
        if kind == "early_stopping":
            callbacks.append(keras.callbacks.EarlyStopping(**options))
            monitor, mode = options.get("monitor", "val_loss"), options.get("mode", "auto")
        elif kind == "reduce_lr":
            if config.optimizer.get("schedule"):
                raise ValueError("reduce_lr cannot change a scheduled learning rate; drop one of them")
            callbacks.append(keras.callbacks.ReduceLROnPlateau(**options))
        elif kind == "checkpoint":  # only chooses what "best" means for best_model.keras
            monitor, mode = options.get("monitor", "val_loss"), options.get("mode", "auto")
        else:
            raise ValueError(f"unknown callback type {kind!r}; expected early_stopping, reduce_lr or checkpoint")
    best = _best_so_far(runs.read_history(run_dir / "history.csv"), monitor, mode)  # None unless resuming
    checkpointing = [keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode=mode,
                                                     save_best_only=True, initial_value_threshold=best)]
    if config.optimizer.get("use_ema"):  # validated and kept: the averaged weights
        put_average_in, take_average_out = moving_average_callbacks()
        checkpointing = [put_average_in, *checkpointing, take_average_out]
    callbacks += [
        *checkpointing,
        *_run_callbacks(run_dir, backup_dir, chief),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), histogram_freq=0),
    ]
    return callbacks
