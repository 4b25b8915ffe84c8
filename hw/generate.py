"""Verilog generation: the accelerator for an AccelConfig, stamped with the config hash."""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog

from ..arch import AccelConfig
from .core import Accelerator

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


def generate(cfg: AccelConfig, out_dir: Path) -> dict[str, Path]:
    """Write ``rmsmp_top.v`` and ``config.json`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"verilog": out_dir / f"{TOP_NAME}.v", "config": out_dir / "config.json"}
    paths["verilog"].write_text(verilog_text(cfg))
    paths["config"].write_text(cfg.to_json() + "\n")
    return paths
