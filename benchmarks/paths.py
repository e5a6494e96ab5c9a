"""What the report scripts share: paths as a report may record them (never this machine's layout),
the served export of a model, and the argument parser built from a script's docstring.

A file under the working directory is written relative to it; one under $VISIONZOO_DATA as
`$VISIONZOO_DATA/...`, so a committed report reads the same on every machine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def portable(path: Path | str) -> str:
    resolved = Path(path).resolve()
    data = os.environ.get("VISIONZOO_DATA")
    if data and resolved.is_relative_to(Path(data).resolve()):
        return "$VISIONZOO_DATA/" + resolved.relative_to(Path(data).resolve()).as_posix()
    if resolved.is_relative_to(Path.cwd()):
        return resolved.relative_to(Path.cwd()).as_posix()
    return Path(path).as_posix()


def served_export(model: str) -> str:
    """The export folder the service reads for served model `model` (visionzoo/serving/models.yaml,
    the one owner of that fact)."""
    import yaml

    from visionzoo.serving.config import MANIFEST

    return yaml.safe_load(MANIFEST.read_text())["models"][model]["export"]


def docstring_parser(doc: str) -> argparse.ArgumentParser:
    """A report script's argument parser: its docstring's first paragraph as the description, the
    paragraphs after the usage line as the epilog, kept as written."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 2)[2],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
