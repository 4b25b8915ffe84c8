"""The overlay package a user copies to the board.

One directory: ``rmsmp.bit`` and ``rmsmp.hwh`` (written there by the Vivado run), the compiled
Program, sample inputs, ``manifest.json`` (board, part, config and its hash, where the registers
are, which file is which) and ``run_on_board.py``, which loads the overlay and runs the Program.
The Program, the manifest and the bitstream project carry one config hash; ``write_overlay``
refuses a Program compiled for another config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..arch import AccelConfig
from ..host.program import Program
from ..host.pynq_driver import IP_NAME
from .devices import Board

MANIFEST = "manifest.json"
SCRIPT = "run_on_board.py"
PROGRAM = "model.rmsmp"
SAMPLES = "samples.npz"
BITSTREAM = "rmsmp.bit"
HWH = "rmsmp.hwh"


def write_overlay(
    board: Board,
    cfg: AccelConfig,
    out_dir: Path,
    program: Program,
    x: np.ndarray,
    labels: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write the package (all but the .bit and .hwh Vivado adds) into ``out_dir``.

    ``x`` are sample inputs shaped (N, *program.input_shape); ``labels`` their classes, if
    known (the script then prints the top-1).
    """
    if program.config_hash != cfg.hash:
        raise ValueError(
            f"the Program was compiled for config {program.config.name!r} ({program.config_hash}) "
            f"but the overlay is built for {cfg.name!r} ({cfg.hash}); compile the model for "
            "the board's config, or build with --config set to the Program's config"
        )
    if tuple(x.shape[1:]) != program.input_shape or len(x) < 1:
        raise ValueError(
            f"samples have shape {x.shape}; the Program takes (N, {program.input_shape})"
        )
    if labels is not None and labels.shape != (len(x),):
        raise ValueError(f"labels have shape {labels.shape}; expected ({len(x)},)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        k: out_dir / v
        for k, v in (
            ("manifest", MANIFEST),
            ("script", SCRIPT),
            ("program", PROGRAM),
            ("samples", SAMPLES),
        )
    }
    program.save(paths["program"])
    arrays = {"x": x} if labels is None else {"x": x, "labels": labels}
    np.savez(paths["samples"], **arrays)
    shutil.copyfile(Path(__file__).with_name(SCRIPT), paths["script"])
    manifest = {
        "board": board.name,
        "part": board.part,
        "config_hash": cfg.hash,
        "config": cfg.to_dict(),
        "ip_name": IP_NAME,
        "csr_base": board.csr_base,
        "csr_range": board.csr_range,
        "bitstream": BITSTREAM,
        "hwh": HWH,
        "program": PROGRAM,
        "samples": SAMPLES,
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=1) + "\n")
    return paths
