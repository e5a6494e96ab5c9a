"""tf.data pipelines over decoded splits: seeded shuffle, batched gather, parallel augmentation,
prefetch.

Splits are already decoded to model-size uint8 pixels (possibly memory-mapped), so the pipeline
shuffles *indices*, gathers a whole batch with one NumPy fancy-index (cheap, and it keeps the
array out of the TF graph), then casts and augments in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

Arrays = Mapping[str, np.ndarray]
Augment = Callable[[dict, dict], tuple[dict, dict]]


def make_dataset(
    features: Arrays,
    targets: Arrays,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sample_weights: Arrays | None = None,
    label_weights: Arrays | None = None,
    augment: Augment | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Yield (features, targets[, sample_weights]) batches of dicts keyed by model input/output names.

    Images (uint8) are cast to float32 pixels in 0..255; scaling is part of each model.
    `sample_weights` are per example, fixed before augmentation; `label_weights` are per-class
    vectors looked up from each (augmented) integer target, so per-pixel weights follow their mask.
    """
    columns = {**{f"x/{k}": v for k, v in features.items()}, **{f"y/{k}": v for k, v in targets.items()}}
    if sample_weights:
        columns.update({f"w/{k}": v for k, v in sample_weights.items()})
    names = list(columns)
    count = len(next(iter(columns.values())))
    for name, values in columns.items():
        if len(values) != count:
            raise ValueError(f"{name} has {len(values)} rows, expected {count}")

    def gather(indices: np.ndarray):
        order = np.sort(indices)  # sorted reads are kinder to memory-mapped arrays
        return [np.ascontiguousarray(columns[name][order]) for name in names]

    dtypes = [tf.as_dtype(columns[n].dtype) for n in names]

    def load_batch(indices):
        tensors = tf.numpy_function(gather, [indices], dtypes, stateful=False)
        out = {}
        for name, tensor in zip(names, tensors):
            tensor.set_shape((None, *columns[name].shape[1:]))
            out[name] = tf.cast(tensor, tf.float32) if name.startswith("x/") else tensor
        return out

    def split_columns(batch):
        parts = {"x": {}, "y": {}, "w": {}}
        for name, tensor in batch.items():
            kind, key = name.split("/", 1)
            parts[kind][key] = tensor
        x, y = parts["x"], parts["y"]
        if augment is not None:
            x, y = augment(x, y)
        weights = parts["w"]
        for key, vector in (label_weights or {}).items():
            looked_up = tf.gather(tf.constant(vector, tf.float32), tf.cast(y[key], tf.int32))
            weights[key] = looked_up * tf.cast(weights[key], tf.float32) if key in weights else looked_up
        return (x, y, weights) if weights else (x, y)

    dataset = tf.data.Dataset.range(count)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(split_columns, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    options = tf.data.Options()
    # Shard by element, not by file: the source is an index range (MultiWorkerMirroredStrategy).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
