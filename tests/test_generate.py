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
    # Comb logic as continuous assignments: no block waits for a time-zero event (hw.generate).
    assert "always @*" not in text
    assert AccelConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg
    log = lint(tmp_path / "rmsmp_top.v")
    assert "%Error" not in log
    assert cfg.hash in capsys.readouterr().out
    _check_header(tmp_path / "rmsmp_regs.h", cfg)


def _check_header(path, cfg: AccelConfig) -> None:
    """The C header compiles and its constants equal arch's, read back by a C program."""
    import subprocess

    from rmsmp.arch import isa, regs

    fields = [
        (isa.Opcode.GEMM, "c_count"),
        (isa.Opcode.GEMM, "pad_left"),
        (isa.Opcode.LOAD, "x_stride"),
        (isa.Opcode.LOAD, "push_next"),
        (isa.Opcode.STORE, "y_size"),
        (isa.Opcode.SYNC, "pop_next"),
    ]
    names = [f"RMSMP_{op.name}_{f.upper()}" for op, f in fields]
    consts = [
        "RMSMP_INSN_BYTES",
        "RMSMP_REG_CONFIG_HASH_HI",
        "RMSMP_REG_FAULT_UNIT",
        "RMSMP_ERROR_DMA_WINDOW",
        "RMSMP_ERROR_DEADLOCK",
        "RMSMP_ERROR_BAD_WINDOW",
        "RMSMP_OP_SYNC",
        *(f"{n}_{part}" for n in names for part in ("LSB", "BITS")),
    ]
    prog = path.parent / "probe.c"
    prog.write_text(
        '#include <stdio.h>\n#include "rmsmp_regs.h"\nint main(void) {\n'
        'printf("%llx\\n", (unsigned long long)RMSMP_CONFIG_HASH);\n'
        + "".join(f'printf("%u\\n", (unsigned){c});\n' for c in consts)
        + "return 0;\n}\n"
    )
    exe = path.parent / "probe"
    subprocess.run(["gcc", "-Wall", "-Werror", str(prog), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    lay = isa.layout(cfg)
    want = [
        cfg.hash.lstrip("0"),
        str(cfg.insn_bits // 8),
        str(regs.REG["CONFIG_HASH_HI"].offset),
        str(regs.REG["FAULT_UNIT"].offset),
        str(int(isa.Error.DMA_WINDOW)),
        str(int(isa.Error.DEADLOCK)),
        str(int(isa.Error.BAD_WINDOW)),
        str(int(isa.Opcode.SYNC)),
    ]
    for op, f in fields:
        want += [str(lay[op][f].offset), str(lay[op][f].width)]
    assert out == want


@pytest.mark.parametrize("board", ["pynq-z1", "tiny"])
def test_c_header_matches_arch(board: str, tmp_path) -> None:
    """The driver header alone (no Verilog needed): ISA v2 fields, error codes, registers."""
    from rmsmp.hw.generate import c_header

    cfg = AccelConfig.for_board(board)
    (tmp_path / "rmsmp_regs.h").write_text(c_header(cfg))
    _check_header(tmp_path / "rmsmp_regs.h", cfg)


def test_generate_rejects_bad_config(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    d = AccelConfig.for_board("tiny").to_dict()
    d["requant_lanes"] = 3
    bad.write_text(json.dumps(d))
    assert main(["generate", "--config", str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "requant_lanes" in capsys.readouterr().err
