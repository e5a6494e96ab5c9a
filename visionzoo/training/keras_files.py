"""Loading `.keras` model files (the run folders' `best_model.keras`) quickly.

tf_keras reads `model.weights.h5` straight out of the zip archive: h5py seeks back and forth in the
member, and every backward seek makes Python's zipfile read the member again from its start, through
TensorFlow's file layer. Loading the 31 MB Mars U-Net took 9.5 s that way and 1.4 s when the member
is first read into memory (same weights, bit for bit), on two cores; it is most of `visionzoo
evaluate`, and a large part of export, ensemble and the end of every training run.

`load_model` is tf_keras's `load_model` with that one difference: while it runs, the weights member is
read into memory once. If a tf_keras release changes the internals this relies on, it falls back to
the stock loader (slower, same result).
"""

from __future__ import annotations

import contextlib
import io
import threading
from pathlib import Path


def weights_file(source: str | Path) -> Path:
    """The file a `weights` setting names (other than "imagenet"): a run folder's best_model.keras, a
    .keras model or an .h5 weights file. ValueError, one line, when there is none: `visionzoo train`
    asks before the data loads, the model builders again when they load it."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "best_model.keras"
    if not path.is_file():
        raise ValueError(f"weights {source}: no such file (give imagenet, none, a run folder with best_model.keras, "
                         "a .keras model or an .h5 weights file)")
    return path


_lock = threading.Lock()  # the switch below is process-wide: one load at a time


@contextlib.contextmanager
def _weights_read_into_memory():
    try:
        import h5py
        from tf_keras.src.saving import saving_lib
    except ImportError:
        yield
        return
    store = getattr(saving_lib, "H5IOStore", None)
    stock = getattr(store, "__init__", None)
    if store is None or stock is None:
        yield
        return

    def from_memory(self, root_path, archive=None, mode="r"):
        if archive is None or mode != "r":
            return stock(self, root_path, archive=archive, mode=mode)
        self.root_path, self.mode, self.archive = root_path, mode, archive
        self.io_file = io.BytesIO(archive.read(root_path))
        self.h5_file = h5py.File(self.io_file, mode=mode)
        return None

    with _lock:
        store.__init__ = from_memory
        try:
            yield
        finally:
            store.__init__ = stock


def load_model(path: str | Path, compile: bool = True):
    """`tf_keras.models.load_model(path, compile=compile)`, reading the weights from memory, with
    the project's custom layers, losses and metrics registered (their modules imported) first."""
    import tf_keras as keras

    from .models import layers, objectives  # noqa: F401  (registers the custom objects the files name)

    with _weights_read_into_memory():
        return keras.models.load_model(str(path), compile=compile)
