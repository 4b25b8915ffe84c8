"""The README's demo block is generated from the last demo run (benchmarks/results/demo.json)."""

from __future__ import annotations

import json

import benchpath  # noqa: F401  (benchmarks/ on sys.path)
import demo_readme
import pytest
from readme import README

from rmsmp.boards import target_config
from rmsmp.demo import SUMMARY, result_lines


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads(SUMMARY.read_text())


def test_readme_block_is_the_summary(summary: dict) -> None:
    """Hand edits of the block show here: rerun python benchmarks/demo_readme.py."""
    text = README.read_text()
    start, end = "<!-- demo-output -->\n", "<!-- /demo-output -->\n"
    block = text[text.index(start) + len(start) : text.index(end)]
    assert block == demo_readme.markdown(summary)


def test_summary_is_of_the_board_config(summary: dict) -> None:
    """A preset changed since the demo ran shows here: rerun make demo, then the generator."""
    assert summary["config_hash"] == target_config(summary["board"]).hash


@pytest.mark.parametrize("flag", ["golden_equals_rtl", "rtl_equals_evaluate"])
def test_a_mismatch_is_reported(summary: dict, flag: str) -> None:
    assert result_lines(summary)[-1].endswith(": yes") == (
        summary["golden_equals_rtl"] and summary["rtl_equals_evaluate"]
    )
    assert result_lines({**summary, flag: False})[-1].endswith(": NO")
