"""visionzoo.training.keras_files.load_model: tf_keras's loader with the weights read into memory."""

from __future__ import annotations

import numpy as np
import pytest


def small_model():
    import tf_keras as keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(size=(8, 8, 8, 3)), rng.integers(0, 3, 8), epochs=1, verbose=0)  # weights and BN stats move
    return model


def test_loads_the_same_model_as_tf_keras_and_leaves_tf_keras_as_it_was(tmp_path):
    import tf_keras as keras
    from tf_keras.src.saving import saving_lib

    from visionzoo.training import keras_files

    model = small_model()
    path = tmp_path / "best_model.keras"
    model.save(path)
    stock_init = saving_lib.H5IOStore.__init__
    stock = keras.models.load_model(path)
    ours = keras_files.load_model(path)
    assert saving_lib.H5IOStore.__init__ is stock_init
    assert [w.name for w in ours.weights] == [w.name for w in stock.weights]
    for a, b in zip(ours.get_weights(), stock.get_weights()):
        np.testing.assert_array_equal(a, b)
    probe = np.random.default_rng(1).uniform(size=(2, 8, 8, 3))
    np.testing.assert_array_equal(ours(probe).numpy(), model(probe).numpy())
    assert ours.optimizer is not None and keras_files.load_model(path, compile=False).optimizer is None

    broken = tmp_path / "broken.keras"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(OSError):  # a cut archive: the loader fails, and the switch is undone all the same
        keras_files.load_model(broken)
    assert saving_lib.H5IOStore.__init__ is stock_init
    model.save(tmp_path / "again.keras")  # saving still writes through the stock store
    assert keras_files.load_model(tmp_path / "again.keras").count_params() == model.count_params()
