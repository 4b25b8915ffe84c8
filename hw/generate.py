"""Verilog generation: the accelerator for an AccelConfig, stamped with the config hash."""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog

from ..arch import AccelConfig, isa, regs
from .shell import Accelerator

TOP_NAME = "rmsmp_top"


def verilog_text(cfg: AccelConfig) -> str:
    """Verilog of the accelerator, with a header naming the config and its hash."""
    top = Accelerator(cfg)
    body = verilog.convert(top, name=TOP_NAME, emit_src=False)
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
