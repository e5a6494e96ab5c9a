"""Training with an averaged network (`--set optimizer.use_ema=true`): validation scores and the kept
checkpoint are the optimizer's moving average of the weights, training steps the raw weights."""

from __future__ import annotations

import numpy as np

from visionzoo.training import runs
from visionzoo.training.callbacks import make_callbacks
from visionzoo.training.recipe import TrainConfig
from visionzoo.training.registry import get_recipe
from visionzoo.training.train import make_optimizer


def test_validation_and_the_kept_checkpoint_are_the_moving_average(tmp_path):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    recipe = get_recipe("bloodcell_mobilenetv3")  # only its task's monitor names are used
    config = TrainConfig.from_recipe(
        recipe, "unused",
        optimizer={"name": "sgd", "learning_rate": 0.02, "use_ema": True, "ema_momentum": 0.9},
        callbacks=[{"type": "checkpoint", "monitor": "val_loss", "mode": "min"}])
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
    model.compile(make_optimizer(config.optimizer), loss="mse")

    raw_at_epoch_end = []

    class RawWeights(keras.callbacks.Callback):  # runs after every callback make_callbacks gives
        def on_epoch_end(self, epoch, logs=None):
            raw_at_epoch_end.append(self.model.get_weights())

    callbacks = make_callbacks(recipe, config, tmp_path, tmp_path / "best.keras", backup_dir=tmp_path / "backup")
    model.fit(x, y, validation_data=(x[:16], y[:16]), epochs=4, batch_size=8, verbose=0,
              callbacks=[*callbacks, RawWeights()])

    val_losses = [float(row["val_loss"]) for row in runs.read_history(tmp_path / "history.csv")]
    assert val_losses == sorted(val_losses, reverse=True), "an easy fit: the last epoch is the best"
    kept = keras.models.load_model(tmp_path / "best.keras")
    # The logged validation loss is the kept network's, and the kept network is the average that fit
    # leaves in the model at the end, not the raw weights the later callbacks (and the backup) saw.
    assert np.isclose(kept.evaluate(x[:16], y[:16], verbose=0), val_losses[-1], rtol=1e-5)
    for kept_weight, final_weight, raw_weight in zip(kept.get_weights(), model.get_weights(), raw_at_epoch_end[-1]):
        np.testing.assert_allclose(kept_weight, final_weight, rtol=1e-6)
        assert not np.allclose(kept_weight, raw_weight, rtol=1e-4)
