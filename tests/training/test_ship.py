"""`make ship` (training/ship.py) retrains what is served: each shipped export's newest version was
made the way its SHIPPED entry says (seeds, mirror averaging, serving settings)."""

import json
from pathlib import Path

import pytest

from visionzoo.training.ship import SHIPPED

REPO = Path(__file__).resolve().parents[2]


def newest(export: str) -> dict:
    versions = [p for p in (REPO / "exported_models" / export).glob("[0-9]*") if p.name.isdigit()]
    if not versions:
        pytest.skip(f"no shipped version of {export}")
    return json.loads((max(versions, key=lambda p: int(p.name)) / "metadata.json").read_text())


@pytest.mark.parametrize("export", sorted(SHIPPED))
def test_the_served_version_is_what_ship_makes(export):
    entry, metadata = SHIPPED[export], newest(export)
    members = metadata.get("training", {}).get("ensemble", {}).get("members")
    seeds = [member["seed"] for member in members] if members else [metadata["recipe"]["config"]["seed"]]
    if not entry.continued:  # a continued model records the last training's seed
        assert sorted(seeds) == sorted(entry.seeds)
    assert bool(metadata.get("mirror_average")) == entry.mirror_average
    assert ("int8" in metadata.get("variants", {})) == entry.int8
    for option, value in entry.export_options.items():
        recorded = {"tile_overlap": metadata["preprocessing"].get("tile_overlap"),
                    "decision_weights": metadata.get("decision_weights")}[option]
        assert recorded == pytest.approx(list(value) if isinstance(value, tuple) else value), option
