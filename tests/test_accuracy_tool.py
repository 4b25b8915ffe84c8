"""benchmarks/accuracy.py's goal block on hand-made rows whose verdicts are known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import accuracy  # noqa: E402


def _row(method: str, epochs: int, top1: float, **extra) -> dict:
    return {"model": "resnet20", "method": method, "epochs": epochs, "top1": top1, **extra}


@pytest.fixture
def rows(tmp_path, monkeypatch):
    path = tmp_path / "accuracy.json"
    monkeypatch.setattr(accuracy, "JSON", path)

    def write(*rs: dict) -> None:
        path.write_text(json.dumps(list(rs)))

    return write


def test_goal_covers_each_schedule_and_skips_legacy_rows(rows) -> None:
    rows(
        _row("fp32", 2, 87.0),
        _row("fp32", 8, 88.0),
        _row("fp32", 16, 89.0),
        _row("rmsmp", 8, 87.6),
        _row("fixed4", 8, 87.7),
        _row("pot4", 8, 86.0),
        _row("brevitas", 8, 90.0, end_input_bits=accuracy.LEGACY_END_INPUT_BITS),
        _row("rmsmp", 2, 85.5),
    )
    text = accuracy.goal()
    two, eight = text.split("ResNet-20 at ")[1:]
    assert two.startswith("2 epochs") and eight.startswith("8 epochs")
    assert "at 16 epochs" not in text  # fp32 only: no mixed row to judge
    assert "| rmsmp | 85.50 | -1.50 |" in two
    assert "| rmsmp | 87.60 | -0.40 |" in eight
    assert "| brevitas |" not in text  # trained under the old recipe
    line = next(ln for ln in eight.splitlines() if ln.startswith("- rmsmp:"))
    assert "0.40 below fp32 (meets the 0.5 goal)" in line
    assert "behind fixed4 by 0.10" in line
    assert "ahead of pot4 by 1.60" in line
    assert "no 8-epoch brevitas row" in line
    line = next(ln for ln in two.splitlines() if ln.startswith("- rmsmp:"))
    assert "1.50 below fp32 (misses the 0.5 goal)" in line
    assert "no 2-epoch fixed4 row" in line


def test_goal_lists_ablations_without_a_verdict(rows) -> None:
    rows(
        _row("fp32", 8, 88.0),
        _row("rmsmp+lsqgrad", 8, 87.7, command="accuracy.py --step-grad-scale"),
        _row("rmsmp", 8, 86.5, command=f"accuracy.py {accuracy.NO_STEP_GRAD_SCALE}"),
    )
    text = accuracy.goal()
    assert "| rmsmp | 86.50 | -1.50 |" in text
    assert "- rmsmp+lsqgrad: 0.30 below fp32" in text
    assert "- rmsmp:" not in text


def test_goal_misses_when_the_gap_is_larger(rows) -> None:
    rows(_row("fp32", 4, 88.0), _row("rmsmp-sp2", 4, 87.0), _row("fixed4", 4, 86.5))
    line = next(ln for ln in accuracy.goal().splitlines() if ln.startswith("- rmsmp-sp2:"))
    assert "1.00 below fp32 (misses the 0.5 goal)" in line
    assert "ahead of fixed4 by 0.50" in line


def test_goal_compares_with_rivals_on_the_same_recipe(rows) -> None:
    rows(
        _row("fp32", 8, 88.0),
        _row("rmsmp-sp2+lsqgrad", 8, 87.9),
        _row("fixed4", 8, 86.8),
        _row("fixed4+lsqgrad", 8, 87.8),
        _row("brevitas-8ends-intres", 8, 87.6),
        _row("pot4", 8, 86.0),  # an ablation: no rival for the default recipe
        _row("rmsmp-sp2+lsqgrad+seed1", 8, 87.6),
        _row("fixed4+lsqgrad+seed1", 8, 87.7),
    )
    lines = accuracy.goal().splitlines()
    line = next(ln for ln in lines if ln.startswith("- rmsmp-sp2+lsqgrad:"))
    assert "ahead of fixed4+lsqgrad by 0.10" in line
    assert "fixed4 by" not in line  # not the row trained without the step-gradient scale
    assert "no 8-epoch pot4+lsqgrad row" in line and "pot4 by" not in line
    assert "ahead of brevitas-8ends-intres by 0.30" in line
    line = next(ln for ln in lines if ln.startswith("- rmsmp-sp2+lsqgrad+seed1:"))
    assert "behind fixed4+lsqgrad+seed1 by 0.10" in line  # the rival of the same seed
    assert "fixed4 by" not in line and "fixed4+lsqgrad by" not in line
    assert "no 8-epoch pot4+lsqgrad+seed1 row" in line


def test_goal_averages_seeds_against_rivals_with_the_same_seeds(rows) -> None:
    rows(
        _row("fp32", 8, 88.0),
        _row("rmsmp-sp2+lsqgrad", 8, 87.9),
        _row("rmsmp-sp2+lsqgrad+seed1", 8, 87.5),
        _row("fixed4+lsqgrad", 8, 87.8),
        _row("fixed4+lsqgrad+seed1", 8, 87.2),
        _row("pot4+lsqgrad", 8, 87.0),  # seed 0 only: no mean to compare
        _row("rmsmp+lsqgrad", 8, 87.4),  # one seed: no mean line
    )
    lines = accuracy.goal().splitlines()
    means = [ln for ln in lines if "mean of seeds" in ln]
    assert len(means) == 1
    assert means[0].startswith(
        "- rmsmp-sp2+lsqgrad, mean of seeds 0, 1: 87.70, 0.30 below fp32 (meets the 0.5 goal);"
    )
    assert "ahead of fixed4+lsqgrad by 0.20 (per seed +0.10, +0.30)" in means[0]
    assert "no pot4+lsqgrad rows for seeds 0, 1" in means[0]


def test_goal_without_fp32(rows) -> None:
    rows(_row("rmsmp", 8, 86.0))
    assert accuracy.goal() == "No fp32 ResNet-20 row yet.\n"


def _sst2(
    method: str, top1: float, epochs: int = 2, data: str = "sst2 / dev", bits: int = 8
) -> dict:
    return {
        "model": "minilm-sst2",
        "method": method,
        "epochs": epochs,
        "top1": top1,
        "data": data,
        "act_bits": bits,
    }


def test_sst2_goal_compares_with_fp32_on_the_same_data(rows) -> None:
    rows(
        _sst2("fp32", 85.0, epochs=1),
        _sst2("fp32", 88.0),
        _sst2("fixed4+kd", 87.5),
        _sst2("rmsmp+kd", 86.5),
        _sst2("rmsmp+kd", 88.25, bits=4),
        _sst2("rmsmp+kd", 10.0, data="other"),
        _row("fp32", 8, 88.0),
    )
    text = accuracy.goal_sst2()
    assert "- fp32 (sst2 / dev, 2 epochs): 88.00." in text
    assert "fixed4+kd (A8, 2 epochs): 87.50, 0.50 below fp32 (meets the 1.0 goal)." in text
    assert "rmsmp+kd (A8, 2 epochs): 86.50, 1.50 below fp32 (misses the 1.0 goal)." in text
    assert "rmsmp+kd (A4, 2 epochs): 88.25, 0.25 above fp32 (meets the 1.0 goal)." in text
    assert "10.00" not in text  # no fp32 row on its data
    rows(_row("fp32", 8, 88.0))
    assert accuracy.goal_sst2() == "No fine-tuned fp32 SST-2 row yet.\n"


def test_a_seed_names_its_row_checkpoint_and_command(monkeypatch) -> None:
    import rmsmp.quant.train

    calls = []

    def fake_train(model, method, epochs, out, **kw):  # the row's naming, not training
        calls.append((out.name, kw["seed"]))
        return {"history": [{"top1": 87.0, "seconds": 1.0}]}

    monkeypatch.setattr(rmsmp.quant.train, "train", fake_train)
    row = accuracy.run_resnet20("rmsmp-sp2", 8, 0.01, seed=2)
    assert row["method"] == "rmsmp-sp2+lsqgrad+seed2"
    assert row["command"].endswith("--epochs 8 --lr 0.01 --step-grad-scale --seed 2")
    assert calls == [("resnet20-rmsmp-sp2+lsqgrad+seed2-e8.pt", 2)]
    row = accuracy.run_resnet20("fixed4", 8, 0.01)
    assert row["method"] == "fixed4+lsqgrad" and "--seed" not in row["command"]
    assert calls[-1] == ("resnet20-fixed4+lsqgrad-e8.pt", 0)
