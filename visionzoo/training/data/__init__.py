"""Loaders for every on-disk format, one module per format, and one table that names them.

`FORMATS[name]` gives the loader, a detector (does this folder look like that format?) and a
one-line description. `load_data(path, spec, formats=...)` picks the first format in `formats`
whose detector accepts the folder, unless a format is named explicitly. Loaders return decoded
`SplitData`; `visionzoo.training.data.pipeline` turns splits into tf.data pipelines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from visionzoo.preprocessing import ImageSpec

from . import blood, cifar, dogs_vs_cats, folders, fracatlas, idx, kaggle_digits, mars, mura
from .common import DataFormatError, Examples, SplitData


@dataclass(frozen=True)
class DataFormat:
    load: Callable[..., SplitData]
    detect: Callable[[Path], bool]
    description: str


FORMATS: dict[str, DataFormat] = {
    "mura": DataFormat(mura.load, mura.detect, "MURA-v1.1 CSVs + XR_<PART>/patient/study PNGs"),
    "fracatlas": DataFormat(fracatlas.load, fracatlas.detect, "FracAtlas images/{Fractured,Non_fractured} + dataset.csv"),
    "blood_pbc": DataFormat(blood.load_pbc, blood.detect_pbc, "PBC blood cells, <class>/<file>.jpg"),
    "blood_npz": DataFormat(blood.load_npz, blood.detect_npz, "AN2DL training_set.npz (images, labels)"),
    "mars_npz": DataFormat(mars.load_npz, mars.detect_npz, "AN2DL mars_for_students.npz (training_set, test_set)"),
    "ai4mars": DataFormat(mars.load_ai4mars, mars.detect_ai4mars, "AI4Mars image JPG + mask PNG (255 unlabelled)"),
    "idx": DataFormat(idx.load, idx.detect, "MNIST / Fashion-MNIST {train,t10k}-*-ubyte[.gz]; splits without an images file from train/, test/ PNGs (folder or .tar.gz)"),
    "image_folders": DataFormat(folders.load, folders.detect, "train/<class>/*, test/<class>/* (or flat test/ + test.csv), a folder or .tar.gz"),
    "cifar_pickle": DataFormat(cifar.load, cifar.detect, "CIFAR-10/100 python pickles (cifar-10-batches-py/, cifar-100-python/ or their .tar.gz)"),
    "kaggle_digits": DataFormat(kaggle_digits.load, kaggle_digits.detect, "Kaggle digit-recognizer train.csv (label,pixel0..pixel783)"),
    "dogs_vs_cats": DataFormat(dogs_vs_cats.load, dogs_vs_cats.detect, "Kaggle dogs vs cats flat folder: cat.<n>.jpg, dog.<n>.jpg"),
}


def resolve_format(path: Path, candidates: Sequence[str], explicit: str | None = None) -> str:
    """The format to read `path` with: `explicit` if given, else the first candidate that matches."""
    if explicit:
        if explicit not in FORMATS:
            raise DataFormatError(f"unknown data format {explicit!r}; known: {sorted(FORMATS)}")
        return explicit
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"data path {path} does not exist")
    for name in candidates:
        if FORMATS[name].detect(path):
            return name
    described = "; ".join(f"{n}: {FORMATS[n].description}" for n in candidates)
    raise DataFormatError(f"{path} does not look like any format this model reads ({described})")


def load_data(path: Path, spec: ImageSpec, candidates: Sequence[str], *, explicit: str | None = None,
              max_examples: int | None = None, **options) -> SplitData:
    """Read a dataset in the first format of `candidates` it matches (or `explicit`). Loaders that
    take `max_examples` keep that many evenly spaced examples per split before decoding (smoke
    runs); for the others the caller trims after loading."""
    import inspect

    name = resolve_format(path, candidates, explicit)
    loader = FORMATS[name].load
    if max_examples is not None and "max_examples" in inspect.signature(loader).parameters:
        options["max_examples"] = max_examples
    return loader(Path(path), spec, **options)


__all__ = ["FORMATS", "DataFormat", "DataFormatError", "Examples", "SplitData", "load_data", "resolve_format"]
