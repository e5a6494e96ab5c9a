"""Shared fixtures: synthetic datasets in every real on-disk format, and the real-data switch.

Tests that need the real datasets use the `real_data` fixture: it reads VISIONZOO_DATA (CI sets it
to ../shared/data when that folder exists) and skips with the reason when it is unset.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# Before any test module is imported: prometheus_client picks single- or multi-process mode when
# it is first imported (tritonclient, BentoML and TensorBoard all import it), and BentoML's /metrics
# reads only the multi-process directory, so the directory must exist by then (what `bentoml serve`
# does for its workers). One per test process (each pytest-xdist worker imports this file itself,
# so no worker counts another's requests), removed when the process ends.
_PROMETHEUS_DIR = tempfile.mkdtemp(prefix="visionzoo-prometheus-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _PROMETHEUS_DIR
atexit.register(shutil.rmtree, _PROMETHEUS_DIR, ignore_errors=True)

import pytest

import visionzoo.training  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)

REPO = Path(__file__).resolve().parents[1]


def shipped_golden(export: str) -> Path:
    """The golden folder of the newest shipped version of `export` (exported_models/<export>/<n>/golden)."""
    versions = [p for p in (REPO / "exported_models" / export).glob("[0-9]*") if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) / "golden" if versions else REPO / "exported_models" / export / "1" / "golden"


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def shipped_input_shape(export: str) -> tuple[int, ...]:
    """One example's input shape in the newest shipped version of `export` (a Mars tile: (128, 256, 1))."""
    metadata = json.loads((shipped_golden(export).parent / "metadata.json").read_text())
    return tuple(metadata["inputs"][0]["shape"][1:])


@pytest.fixture(scope="session")
def real_data() -> Path:
    value = os.environ.get("VISIONZOO_DATA")
    if not value:
        pytest.skip("VISIONZOO_DATA is not set (point it at the real datasets, e.g. ../shared/data)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"VISIONZOO_DATA={value} is not a folder")
    return path


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A folder of tiny datasets, one per format, written once per session.

    Keys: mura, fracatlas, blood_pbc, blood_npz, mars_npz, ai4mars (and *_corrupt variants that
    include unreadable files).
    """
    from visionzoo.training.data import synthetic as writers

    root = tmp_path_factory.mktemp("synthetic")
    paths = {
        "mura": writers.write_mura(root / "mura"),
        "fracatlas": writers.write_fracatlas(root / "fracatlas"),
        "blood_pbc": writers.write_pbc(root / "pbc"),
        "blood_npz": writers.write_blood_npz(root / "blood" / "training_set.npz"),
        "mars_npz": writers.write_mars_npz(root / "mars" / "mars_for_students.npz"),
        "ai4mars": writers.write_ai4mars(root / "ai4mars"),
        "mura_corrupt": writers.write_mura(root / "mura_corrupt", corrupt=1),
        "fracatlas_corrupt": writers.write_fracatlas(root / "fracatlas_corrupt", corrupt=2),
        "blood_pbc_corrupt": writers.write_pbc(root / "pbc_corrupt", corrupt=1),
        "ai4mars_corrupt": writers.write_ai4mars(root / "ai4mars_corrupt", corrupt=1),
    }
    return paths


# `make test` runs the tests that start no server on pytest-xdist workers with `--dist loadgroup`,
# scheduled here by file: every file stays on one worker, so its module-scoped fixtures are built once;
# the files of independent model cases with no module-scoped fixture are spread case by case; and the
# files whose tests share a session fixture that takes tens of seconds run together. (xdist's own
# loadgroup reads `xdist_group` marks from test ids it rewrites, which pytest 9.2 no longer lets it
# do: pytest-xdist issue 1386. A scheduler that reads ids only does not depend on that.)
SPREAD_FILES = frozenset({"test_models.py", "test_export.py", "test_export_registry.py"})
SESSION_FIXTURE_FILES = {"mars_smoke_run": ("tests/training/test_cli.py", "tests/training/test_quantize.py")}


def scheduling_unit(nodeid: str) -> str:
    """The scheduling unit of a test: its file, its own id (SPREAD_FILES), or the files of a shared session fixture."""
    path = nodeid.split("::", 1)[0]
    if path.rsplit("/", 1)[-1] in SPREAD_FILES:
        return nodeid
    return next((fixture for fixture, files in SESSION_FIXTURE_FILES.items() if path in files), path)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scheduling_unit(nodeid)

    return FileGroups(config, log)


def pytest_collection_modifyitems(config, items):
    """Keep SESSION_FIXTURE_FILES true: a test elsewhere using one of those fixtures would build it again on its worker."""
    for item in items:
        path = item.path.relative_to(REPO).as_posix()
        for fixture, files in SESSION_FIXTURE_FILES.items():
            if fixture in item.fixturenames and path not in files:
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: add {path} to SESSION_FIXTURE_FILES in tests/conftest.py")
