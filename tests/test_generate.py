"""`rmsmp generate` for the board presets: hash-stamped Verilog that Verilator lints clean."""

from __future__ import annotations

import json

import pytest

from rmsmp.arch import AccelConfig
from rmsmp.cli import main
from rmsmp.sim.verilator import lint


@pytest.mark.parametrize("board", ["pynq-z1", "zc706"])
def test_generate_lints_clean(board: str, tmp_path, capsys) -> None:
    assert main(["generate", "--board", board, "-o", str(tmp_path)]) == 0
    cfg = AccelConfig.for_board(board)
    text = (tmp_path / "rmsmp_top.v").read_text()
    assert f"// RMSMP_CONFIG_HASH {cfg.hash}" in text.splitlines()[1]
    assert "module rmsmp_top" in text
    assert AccelConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg
    log = lint(tmp_path / "rmsmp_top.v")
    assert "%Error" not in log
    assert cfg.hash in capsys.readouterr().out


def test_generate_rejects_bad_config(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    d = AccelConfig.for_board("tiny").to_dict()
    d["requant_lanes"] = 3
    bad.write_text(json.dumps(d))
    assert main(["generate", "--config", str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "requant_lanes" in capsys.readouterr().err
