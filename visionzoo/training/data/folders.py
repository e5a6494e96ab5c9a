"""Image folders: `train/<class>/<file>` and `test/<class>/<file>` (Keras `flow_from_directory`,
torchvision `ImageFolder`), as a folder or packed in a `.tar`/`.tar.gz` archive, which is read in
place (members stay in memory; nothing is extracted).

Accepted layouts (the root may be the folder, the archive, or a folder holding one archive):
- `train/<class>/*` (+ optional `val|valid|validation/<class>/*`) + `test/<class>/*`;
- a flat `test/*` with a label file: `test.csv` or `test_labels.csv` (`file,label`; label a class
  name or index) inside the root. The Fashion-MNIST PNG archive (flat `test/NNNN.png` + an idx
  label file) is read by visionzoo.training.data.idx, which uses the functions here.

Class order: `class_names` when given (folder names must be in it, or be indices into it),
else numeric folder names in numeric order, else alphabetical (as `flow_from_directory`).
Example order within a split: by (file number, class), so files named by their index in the
original set (MNIST PNGs) come back in the original order, and per-class counters (CIFAR-10 JPEGs)
interleave the classes; "last N" validation then takes every class alike.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from visionzoo.preprocessing import ImageSpec

from .common import DataFormatError, SplitData
from .holdout import Listing, assemble, file_listing

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TEXT_SUFFIXES = {".csv", ".txt"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
VALIDATION_FOLDERS = ("val", "valid", "validation")
LABEL_FILES = ("test.csv", "test_labels.csv")
_NUMBER = re.compile(r"(\d+)")


@dataclass
class Tree:
    """Image (and small text) files under a folder or inside an archive, by relative POSIX path."""

    root: Path
    files: list[str]
    archive: bool = False
    _blobs: dict[str, bytes] = field(default_factory=dict, repr=False)

    def read(self, key: str) -> bytes | str:
        """The member's bytes (archive) or the file's path (folder)."""
        return self._blobs[key] if self.archive else str(self.root / key)

    def text(self, key: str) -> str:
        data = self.read(key)
        return data.decode("utf-8") if isinstance(data, bytes) else Path(data).read_text()

    def describe(self, key: str) -> str:
        return f"{self.root}#{key}" if self.archive else str(self.root / key)

    def under(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/"
        return [name for name in self.files if name.startswith(prefix)]

    def subfolders(self, folder: str) -> list[str]:
        names = {PurePosixPath(name).relative_to(folder).parts[0] for name in self.under(folder)
                 if len(PurePosixPath(name).relative_to(folder).parts) > 1}
        return sorted(names)

    def has(self, folder: str) -> bool:
        return bool(self.under(folder))


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _strip_wrapper(names: list[str]) -> tuple[list[str], str]:
    """'CIFAR-10-images/train/...' -> 'train/...' when every member shares one top folder."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        top = tops.pop()
        if not any(name.startswith(("train/", "test/")) for name in names):
            return [name.split("/", 1)[1] for name in names], top + "/"
    return names, ""


def read_archive(path: Path) -> Tree:
    """Read every image and text member of a tar archive in one pass (gz streams are sequential)."""
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                suffix = PurePosixPath(member.name).suffix.lower()
                if member.isfile() and (suffix in IMAGE_SUFFIXES or suffix in TEXT_SUFFIXES):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        blobs[member.name.removeprefix("./")] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataFormatError(f"{path}: cannot read the archive ({error})") from error
    names, wrapper = _strip_wrapper(sorted(blobs))
    if wrapper:
        blobs = {name: blobs[wrapper + name] for name in names}
    return Tree(root=Path(path), files=names, archive=True, _blobs=blobs)


def read_folder(path: Path) -> Tree:
    root = Path(path)
    names = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() in TEXT_SUFFIXES)
    )
    return Tree(root=root, files=names)


def _peek_archive(path: Path, members: int = 40) -> bool:
    """Does the archive start with train/ or test/ folders (looks at the first members only)?"""
    try:
        with tarfile.open(path, "r:*") as archive:
            for index, member in enumerate(archive):
                parts = PurePosixPath(member.name.removeprefix("./")).parts
                if parts[:1] in (("train",), ("test",)) or parts[1:2] in (("train",), ("test",)):
                    return True
                if index >= members:
                    return False
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def find_archive(folder: Path) -> Path | None:
    """The one archive in `folder` whose members start with train/ or test/, if any."""
    if not folder.is_dir():
        return None
    for candidate in sorted(folder.iterdir()):
        if is_archive(candidate) and _peek_archive(candidate):
            return candidate
    return None


def open_tree(path: Path) -> Tree:
    """The folder itself when it has train/ or test/, else the archive it is or holds."""
    path = Path(path)
    if is_archive(path):
        return read_archive(path)
    if (path / "train").is_dir() or (path / "test").is_dir():
        return read_folder(path)
    archive = find_archive(path)
    if archive is not None:
        return read_archive(archive)
    raise DataFormatError(f"{path}: expected train/ and test/ image folders, or a .tar.gz archive holding them")


def detect(path: Path) -> bool:
    path = Path(path)
    if is_archive(path):
        return _peek_archive(path)
    train = path / "train"
    if train.is_dir():
        return any(child.is_dir() for child in train.iterdir())
    return find_archive(path) is not None


def file_number(name: str) -> int:
    """The last number in a file name ('0042.png' -> 42, 'cat.17.jpg' -> 17), -1 without one."""
    numbers = _NUMBER.findall(PurePosixPath(name).stem)
    return int(numbers[-1]) if numbers else -1


def resolve_class_order(folders: list[str], class_names: list[str] | None, where: str) -> tuple[list[str], dict[str, int]]:
    """(class names, folder -> label). Folders are names in `class_names`, or indices into it."""
    numeric = all(name.isdigit() for name in folders)
    if class_names:
        if numeric:
            mapping = {name: int(name) for name in folders}
            if max(mapping.values()) >= len(class_names):
                raise DataFormatError(f"{where}: class folder {max(mapping.values())} but only {len(class_names)} class names")
            return list(class_names), mapping
        unknown = sorted(set(folders) - set(class_names))
        if unknown:
            raise DataFormatError(f"{where}: unknown class folders {unknown}; expected names from {list(class_names)}")
        return list(class_names), {name: class_names.index(name) for name in folders}
    if numeric:
        count = max(int(name) for name in folders) + 1
        return [str(i) for i in range(count)], {name: int(name) for name in folders}
    return list(folders), {name: index for index, name in enumerate(folders)}


def class_folder_entries(tree: Tree, split: str) -> list[tuple[str, str]]:
    """(member, class folder) for every image at `split/<class>/<file>`, in (number, class) order."""
    entries = []
    for name in tree.under(split):
        parts = PurePosixPath(name).relative_to(split).parts
        if len(parts) == 2 and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
            entries.append((name, parts[0]))
    return sorted(entries, key=lambda entry: (file_number(entry[0]), entry[1], entry[0]))


def flat_entries(tree: Tree, split: str) -> list[str]:
    """Images directly under `split/`, in file-number order."""
    names = [n for n in tree.under(split) if len(PurePosixPath(n).relative_to(split).parts) == 1
             and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(names, key=lambda n: (file_number(n), n))


def _csv_labels(tree: Tree, mapping_names: list[str]) -> dict[str, int] | None:
    """file name -> label from test.csv / test_labels.csv (`file,label`), if present."""
    for name in LABEL_FILES:
        if name not in tree.files:
            continue
        rows = list(csv.reader(io.StringIO(tree.text(name))))
        if rows and not rows[0][-1].strip().lstrip("-").isdigit() and rows[0][-1].strip() not in mapping_names:
            rows = rows[1:]  # header
        labels = {}
        for line, row in enumerate(rows, start=2):
            if len(row) < 2:
                raise DataFormatError(f"{tree.describe(name)}: line {line}: expected 'file,label', got {row}")
            value = row[-1].strip()
            if value in mapping_names:
                labels[PurePosixPath(row[0].strip()).name] = mapping_names.index(value)
            elif value.isdigit():
                labels[PurePosixPath(row[0].strip()).name] = int(value)
            else:
                raise DataFormatError(f"{tree.describe(name)}: line {line}: unknown label {value!r}")
        return labels
    return None


def split_listing(
    tree: Tree, split: str, class_names: list[str], mapping: dict[str, int], spec: ImageSpec, skip_bad: bool,
    flat_labels: dict[str, int] | None = None,
) -> Listing:
    """List `split/<class>/*`, or a flat `split/*` labelled by `flat_labels` (file name -> label)."""
    entries = class_folder_entries(tree, split)
    if entries:
        keys = [member for member, _ in entries]
        labels = [mapping[folder] for _, folder in entries]
    else:
        keys = flat_entries(tree, split)
        if not keys:
            raise DataFormatError(f"{tree.describe(split)}: no images")
        if flat_labels is None:
            raise DataFormatError(f"{tree.describe(split)}: images without class folders need a label file ({' or '.join(LABEL_FILES)})")
        missing = [k for k in keys if PurePosixPath(k).name not in flat_labels]
        if missing:
            raise DataFormatError(f"{tree.describe(missing[0])}: no label for this file ({len(missing)} unlabelled)")
        labels = [flat_labels[PurePosixPath(k).name] for k in keys]
    ids = [tree.describe(key) for key in keys]
    return file_listing(keys, labels, ids, spec, tree.read, skip_bad, f"{tree.root.name} {split}")


def load(
    data_dir: Path,
    spec: ImageSpec,
    *,
    seed: int = 42,
    skip_bad: bool = False,
    validation: str = "fraction:0.1",
    class_names: list[str] | None = None,
    max_examples: int | None = None,
    test_fraction: float | None = None,
) -> SplitData:
    """Read train/ (+ val/) + test/ image folders from a folder or an archive."""
    tree = open_tree(Path(data_dir))
    folders = tree.subfolders("train")
    if not folders:
        raise DataFormatError(f"{tree.describe('train')}: expected one sub-folder per class")
    test_folders = tree.subfolders("test")
    names, mapping = resolve_class_order(sorted(set(folders) | set(test_folders)), class_names, str(tree.root))
    train = split_listing(tree, "train", names, mapping, spec, skip_bad)
    val = None
    for folder in VALIDATION_FOLDERS:
        if tree.has(folder):
            val = split_listing(tree, folder, names, mapping, spec, skip_bad)
            break
    test = None
    if tree.has("test"):
        flat = None if test_folders else _csv_labels(tree, names)
        test = split_listing(tree, "test", names, mapping, spec, skip_bad, flat_labels=flat)
    return assemble(
        train, test, validation=validation, seed=seed, class_names=names, max_examples=max_examples, val=val,
        test_fraction=test_fraction if test is None else None,
        source=f"image folders {'in archive ' if tree.archive else 'at '}{tree.root}",
    )
