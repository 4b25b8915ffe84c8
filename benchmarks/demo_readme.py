"""The README's demo block from the last ``make demo`` (benchmarks/results/demo.json).

``rmsmp demo`` writes its summary there; this rewrites the README's ``demo-output`` block with
the lines the demo printed (the same functions print them, ``rmsmp.demo.head_lines`` and
``result_lines``; the progress bars are left out) and a note on the sample: the checkpoint's
top-1 on the whole test set where benchmarks/results/export.json has it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from readme import replace_block

from rmsmp.demo import SUMMARY, head_lines, result_lines

EXPORT = Path(__file__).resolve().parent / "results" / "export.json"
NARROWEST = 16
"""ResNet-20's narrowest layers' channels (its first stage)."""


def whole_test_set(checkpoint: str) -> float | None:
    """The checkpoint's integer top-1 on the whole CIFAR-10 test set (export.json), if there."""
    if not EXPORT.is_file():
        return None
    runs = [
        r
        for r in json.loads(EXPORT.read_text())
        if r["checkpoint"] == checkpoint and r["images"] == 10_000
    ]
    return runs[-1]["top1_integer"] if runs else None


def markdown(s: dict) -> str:
    """The demo block: its printed lines in a code block, then what to read into them."""
    lines = ["```", *head_lines(s), *result_lines(s), "```", ""]
    note = f"({s['images']} images are a small sample"
    top1 = whole_test_set(s["checkpoint"])
    note += (
        f": the same checkpoint scores {top1:.2f}% on the whole test set."
        if top1 is not None
        else "."
    )
    note += " The useful MAC/cycle counts only the network's own MACs: "
    if s["rows"] > NARROWEST:
        note += (
            f"{NARROWEST}-channel layers fill {NARROWEST} of {s['rows']} PE rows and lanes, and "
        )
    note += "the shortcut copies and pools add array cycles of their own.)"
    return "\n".join([*lines, textwrap.fill(note, width=99)]) + "\n"


def main() -> int:
    if not SUMMARY.is_file():
        raise SystemExit(f"{SUMMARY} is missing: run make demo (rmsmp demo) first")
    replace_block("demo-output", markdown(json.loads(SUMMARY.read_text())))
    print(f"README demo block rewritten from {SUMMARY}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
