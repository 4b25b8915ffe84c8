"""Verilog generation: the accelerator for an AccelConfig, stamped with the config hash."""

from __future__ import annotations

from pathlib import Path

from amaranth._toolchain.yosys import find_yosys  # how amaranth.back.verilog finds Yosys
from amaranth.back import rtlil
from amaranth.lib import wiring

from ..arch import AccelConfig, isa, regs
from .shell import Accelerator

TOP_NAME = "rmsmp_top"
YOSYS_SCRIPT = """read_rtlil <<rtlil
{rtlil}
rtlil
proc -norom
memory_collect
write_verilog
"""
"""Yosys turns Amaranth's RTLIL into Verilog; this replaces the script of
``amaranth.back.verilog`` (``proc -nomux -norom; memory_collect; write_verilog -norename``).

``proc -nomux`` leaves combinational logic as ``always @*`` blocks that run at time zero only
through an event from a ``reg trigger = 0`` initializer. SystemVerilog semantics (Icarus -g2012,
cocotb's default) fire no such event, so those blocks stay X until an input changes and the
accelerator deadlocks. Full ``proc`` turns every process into mux cells, written as continuous
assignments, which every simulator evaluates at time zero in either language generation.
``write_verilog`` without ``-norename`` names Yosys' own cells ``_12_`` instead of
``\\$procmux$12``: Icarus takes a call of a function named ``\\$...`` for a system task.
``-norom`` as in Amaranth: switches stay logic."""
YOSYS_VERSION = (0, 40)
"""The oldest Yosys ``amaranth.back.verilog`` 0.5 accepts."""


def to_verilog(dut: wiring.Component, name: str) -> str:
    """Verilog of ``dut`` as module ``name``, without ``always @*`` blocks (see ``YOSYS_SCRIPT``).

    Yosys as Amaranth finds it (built in, or ``AMARANTH_USE_YOSYS``)."""
    text = rtlil.convert(dut, name=name, emit_src=False)
    yosys = find_yosys(lambda version: version >= YOSYS_VERSION)
    return yosys.run(["-q", "-"], YOSYS_SCRIPT.format(rtlil=text))


def verilog_text(cfg: AccelConfig) -> str:
    """Verilog of the accelerator, with a header naming the config and its hash."""
    body = to_verilog(Accelerator(cfg), TOP_NAME)
    header = (
        f"// rmsmp accelerator, generated from AccelConfig {cfg.name!r}\n"
        f"// RMSMP_CONFIG_HASH {cfg.hash}\n"
        f"// rows {cfg.rows} ({', '.join(f'{g.fmt}:{g.rows}' for g in cfg.groups)}), "
        f"cols {cfg.cols}\n"
    )
    return header + body


def c_header(cfg: AccelConfig) -> str:
    """C header for drivers: register offsets, status bits, error codes, ISA fields, hash."""
    lines = [
        f"/* rmsmp register map and ISA for AccelConfig {cfg.name!r}; generated, do not edit. */",
        "#pragma once",
        f"#define RMSMP_CONFIG_HASH 0x{cfg.hash}ULL",
        f"#define RMSMP_MAGIC 0x{regs.MAGIC:08X}u",
        f"#define RMSMP_INSN_BYTES {cfg.insn_bits // 8}",
    ]
    lines += [f"#define RMSMP_REG_{r.name} 0x{r.offset:02X}u /* {r.doc} */" for r in regs.REGS]
    lines += [f"#define RMSMP_STATUS_{s.name} {int(s)}u" for s in regs.Status]
    lines += [f"#define RMSMP_ERROR_{e.name} {int(e)}u" for e in isa.Error]
    lines += [f"#define RMSMP_OP_{op.name} {int(op)}u" for op in isa.Opcode]
    for op, fields in isa.layout(cfg).items():
        for f in fields.values():
            key = f"RMSMP_{op.name}_{f.name.upper()}"
            lines += [f"#define {key}_LSB {f.offset}", f"#define {key}_BITS {f.width}"]
    return "\n".join(lines) + "\n"


def generate(cfg: AccelConfig, out_dir: Path) -> dict[str, Path]:
    """Write the Verilog, the config JSON and the C header into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "verilog": out_dir / f"{TOP_NAME}.v",
        "config": out_dir / "config.json",
        "header": out_dir / "rmsmp_regs.h",
    }
    paths["verilog"].write_text(verilog_text(cfg))
    paths["config"].write_text(cfg.to_json() + "\n")
    paths["header"].write_text(c_header(cfg))
    return paths
