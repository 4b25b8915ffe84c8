"""The README's generated result blocks equal what their generators make of the results JSON, and
that JSON is of the presets as they are now (a preset resized since a benchmark ran shows here:
rerun the benchmark, then its ``--readme``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import benchpath  # noqa: F401  (benchmarks/ on sys.path)
import ddr
import dse
import e2e
import first_layer
import minilm_sst2
import pe_resources
import pytest
import resources
from readme import README

from rmsmp.arch import PRESETS
from rmsmp.boards import resources as model

RESULTS = e2e.RESULTS


def _block(name: str) -> str:
    text = README.read_text()
    start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->\n"
    return text[text.index(start) + len(start) : text.index(end)]


BLOCKS: dict[str, tuple[str, Callable[[object], str]]] = {
    "e2e-table": ("e2e.json", e2e.markdown),
    "ddr-table": ("e2e.json", ddr.markdown),
    "dse": ("dse.json", dse.markdown),
    "minilm-sst2": ("minilm_sst2.json", minilm_sst2.readme_table),
}
"""README block: the JSON under benchmarks/results it is made from, and its generator."""


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_readme_block_is_its_json(block: str) -> None:
    """Hand edits of a block show here: rerun the benchmark's --readme."""
    path, markdown = BLOCKS[block]
    assert _block(block) == markdown(json.loads((RESULTS / path).read_text()))


def test_e2e_runs_are_of_the_presets() -> None:
    """Every board preset is in e2e.json on both networks, at its current config and clock."""
    runs = json.loads(e2e.JSON.read_text())["runs"]
    have = {(r["preset"], r["network"]): r for r in runs}
    for cfg in (c for b in e2e.BOARDS for c in e2e.presets(b)):
        for net in e2e.NETWORKS:
            r = have[(cfg.name, net)]
            assert (r["config_hash"], r["clock_mhz"]) == (cfg.hash, cfg.clock_mhz), cfg.name


def test_dse_presets_are_the_presets() -> None:
    """Each board's presets in dse.json are the current configs at their current clocks."""
    points = json.loads(dse.JSON.read_text())["points"]
    for board in dse.SIZES:
        named = {p["preset"]: p for p in points if p["board"] == board and p["preset"]}
        assert sorted(named) == sorted(c.name for c in e2e.presets(board))
        for name, p in named.items():
            cfg = PRESETS[name]
            assert (p["config_hash"], p["clock_mhz"]) == (cfg.hash, cfg.clock_mhz), name


def test_first_layer_rows_are_the_presets() -> None:
    """first_layer.json has one row per preset but tiny, each with the preset's lanes."""
    rows = json.loads(first_layer.JSON.read_text())
    assert sorted(r["preset"] for r in rows) == sorted(n for n in PRESETS if n != "tiny")
    for r in rows:
        assert r["lanes"] == PRESETS[r["preset"]].cols, r["preset"]


def test_minilm_cycles_are_of_the_presets() -> None:
    """MiniLM's device cycles, golden runs and RTL runs in minilm_sst2.json are of the presets as
    they are now (a resized preset shows here: rerun the rows)."""
    for row in json.loads(minilm_sst2.JSON.read_text()):
        for dev in [row["device"], *row["device_other_boards"].values()]:
            cfg = PRESETS[dev["board"]]
            assert (dev.get("config_hash"), dev["clock_mhz"]) == (cfg.hash, cfg.clock_mhz)
        assert row["golden_config_hash"] == PRESETS[row["board"]].hash
        assert row["rtl_config_hash"] == PRESETS[row["rtl_board"]].hash


def test_hardware_and_pe_blocks_are_their_json() -> None:
    """The hardware and PE tables are what resources.py and pe_resources.py make of their JSON
    (both generators refuse counts or timing of another pynq-z1 config)."""
    assert _block("hardware-table") == resources.hardware_table()
    assert _block("pe-table") == pe_resources.readme_table()


def test_pe_estimates_are_of_the_model_and_presets_now() -> None:
    """pe_resources.json's estimates are the resource model's of every preset as they are now:
    a refit of boards/resource_model.json or a resized preset shows here (rerun --estimates)."""
    res = json.loads((RESULTS / "pe_resources.json").read_text())
    assert sorted(res["estimates"]) == sorted(PRESETS)
    for name, cfg in PRESETS.items():
        assert res["estimates"][name] == model.estimate(cfg).as_dict(), name  # same arithmetic
    assert res["crosscheck"]["config_hash"] == PRESETS[res["crosscheck"]["board"]].hash
