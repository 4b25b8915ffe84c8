"""AccelConfig: the one description of an accelerator instance.

The hardware generator, the ISA field widths, the memory layouts, the compiler's tiling and the
board files all derive from it. It is frozen, validated in the constructor, round-trips through
JSON, and has a stable hash that every artifact carries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import ConfigError
from .isa import check_fits
from .layout import LUT_MUL_FORMAT
from .numerics import weight_format


@dataclass(frozen=True)
class RowGroup:
    """A contiguous group of PE rows that all use one weight format.

    ``lut_rows`` of a Fixed-4 group's rows (its last ones) multiply in LUTs instead of on packed
    DSP48E1s (``arch.layout.pe_units``): the same numbers from other resources, so the compiler
    sees one group of ``rows`` rows either way.
    """

    fmt: str
    rows: int
    lut_rows: int = 0

    def __post_init__(self) -> None:
        try:
            weight_format(self.fmt)
        except ValueError as e:
            raise ConfigError(f"row group: {e}") from None
        if not isinstance(self.rows, int) or self.rows < 1:
            raise ConfigError(
                f"row group {self.fmt}: rows must be a positive int, got {self.rows!r}"
            )
        if not isinstance(self.lut_rows, int) or not 0 <= self.lut_rows <= self.rows:
            raise ConfigError(
                f"row group {self.fmt}: lut_rows must be an int in [0, {self.rows}], "
                f"got {self.lut_rows!r}"
            )
        if self.lut_rows and self.fmt != LUT_MUL_FORMAT:
            raise ConfigError(
                f"row group {self.fmt}: lut_rows is for {LUT_MUL_FORMAT} rows only (the LUT "
                "multiplier PE); set 0"
            )

    def to_dict(self) -> dict:
        """Plain data; ``lut_rows`` only when set, so configs without it keep their hash."""
        d = asdict(self)
        if not self.lut_rows:
            del d["lut_rows"]
        return d


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class AccelConfig:
    """Shape, widths and buffer depths of one accelerator instance.

    PE rows (output channels) come in ``groups``, in order; ``cols`` is the vector width (input
    channels per cycle) and equals the row count, so an output entry (one activation per PE row)
    is an input entry of the next layer. ``cmd_depth`` is each unit's command queue,
    ``token_depth`` each dependency-token counter (``arch.isa``); ``watchdog_cycles`` is how long
    an AXI handshake may stall before the run stops with AXI_TIMEOUT.
    Depths count buffer entries: a weight entry holds one ``cols``-wide chunk
    for every PE row, an input entry ``cols`` activations, an accumulator entry one int per PE row,
    an output entry one activation per PE row, a requant entry the params of every PE row.
    """

    name: str
    groups: tuple[RowGroup, ...]
    cols: int
    act_bits: int = 8
    acc_bits: int = 32
    w_depth: int = 512
    x_depth: int = 2048
    acc_depth: int = 256
    out_depth: int = 256
    q_depth: int = 64
    requant_lanes: int = 4
    axi_data_bits: int = 64
    axi_addr_bits: int = 32
    max_burst: int = 16
    max_outstanding: int = 4
    insn_bits: int = 192
    cmd_depth: int = 8
    token_depth: int = 8
    watchdog_cycles: int = 65536
    clock_mhz: float = 100.0

    def __post_init__(self) -> None:
        groups = tuple(
            g if isinstance(g, RowGroup) else RowGroup(**g)
            for g in self.groups  # type: ignore[arg-type]
        )
        object.__setattr__(self, "groups", groups)
        if not groups:
            raise ConfigError("groups: at least one row group is needed")
        names = [g.fmt for g in groups]
        if len(set(names)) != len(names):
            raise ConfigError(f"groups: each format may appear once, got {names}")
        ints = {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}
        for k, v in ints.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{k}: must be a positive int, got {v!r}")
        if self.act_bits != 8:
            raise ConfigError("act_bits: only 8-bit activation storage is implemented; set 8")
        if not 24 <= self.acc_bits <= 46:
            raise ConfigError(
                f"acc_bits: must be in [24, 46], got {self.acc_bits} (requant shifts the "
                "accumulator left by BIAS_FRAC_BITS and adds the bias in 64-bit arithmetic)"
            )
        if self.axi_data_bits != 64:
            raise ConfigError("axi_data_bits: the Zynq HP port is 64 bits wide; set 64")
        if self.axi_addr_bits != 32:
            raise ConfigError("axi_addr_bits: Zynq-7000 addresses are 32 bits; set 32")
        if not 1 <= self.max_burst <= 16:
            raise ConfigError("max_burst: Zynq HP ports are AXI3, so bursts are 1..16 beats")
        if not _pow2(self.max_burst):
            raise ConfigError(
                f"max_burst: must be a power of two (1, 2, 4, 8 or 16), got {self.max_burst}: "
                "WINDOW_BASE is aligned to one full burst"
            )
        if self.insn_bits % self.axi_data_bits:
            raise ConfigError("insn_bits: must be a multiple of axi_data_bits")
        if self.cols != self.rows:
            raise ConfigError(
                f"cols: must equal the PE row count {self.rows} (got {self.cols}): one layer's "
                "output entries are the next layer's input entries"
            )
        if self.rows % self.requant_lanes:
            raise ConfigError(
                f"requant_lanes: {self.requant_lanes} must divide the PE row count {self.rows}"
            )
        for k in ("w_depth", "x_depth", "acc_depth", "out_depth", "q_depth"):
            if not _pow2(getattr(self, k)):
                raise ConfigError(f"{k}: must be a power of two, got {getattr(self, k)}")
        if not self.clock_mhz > 0:
            raise ConfigError(f"clock_mhz: must be positive, got {self.clock_mhz}")
        check_fits(self)  # the ISA's field widths derive from this config

    @property
    def rows(self) -> int:
        """Total PE rows (output channels computed per cycle)."""
        return sum(g.rows for g in self.groups)

    @property
    def peak_macs_per_cycle(self) -> int:
        """MACs the array does per cycle when fully busy."""
        return self.rows * self.cols

    @property
    def window_align(self) -> int:
        """Byte alignment WINDOW_BASE must have: one full burst (BAD_WINDOW otherwise)."""
        return self.max_burst * self.axi_data_bits // 8

    @property
    def row_ratio(self) -> dict[str, float]:
        """Share of the PE rows each format has: the ratio a quantizer assigns rows in."""
        return {g.fmt: g.rows / self.rows for g in self.groups}

    def group_offsets(self) -> dict[str, tuple[int, int]]:
        """First PE row and row count of each format's group."""
        out, r = {}, 0
        for g in self.groups:
            out[g.fmt] = (r, g.rows)
            r += g.rows
        return out

    def to_dict(self) -> dict:
        """Plain-data form (what JSON holds)."""
        d = asdict(self)
        d["groups"] = [g.to_dict() for g in self.groups]
        return d

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace variance."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> AccelConfig:
        """Build from plain data, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**d, "groups": tuple(RowGroup(**g) for g in d["groups"])})

    @classmethod
    def from_json(cls, text: str) -> AccelConfig:
        """Parse JSON written by ``to_json``."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config JSON is malformed: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> AccelConfig:
        """Read a JSON file written by ``to_json`` (or ``rmsmp generate``); ConfigError names
        the file for one that is missing, unreadable or not a valid config."""
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config {p} is a directory; give the config JSON file")
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config {p} does not exist; check the path") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config {p} cannot be read ({e}); check the file") from None
        try:
            return cls.from_json(text)
        except (ConfigError, TypeError, KeyError, AttributeError) as e:
            raise ConfigError(f"config {p}: {e}") from None

    @property
    def hash(self) -> str:
        """Stable 64-bit identity (16 hex digits) of everything but the name."""
        d = self.to_dict()
        d.pop("name")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def hash_int(self) -> int:
        """``hash`` as an integer, as the CONFIG_HASH registers hold it."""
        return int(self.hash, 16)

    @classmethod
    def preset(cls, name: str) -> AccelConfig:
        """An accelerator preset by name (``PRESETS``): "pynq-z1" and "zc706" are sized for
        those boards' parts, "tiny" is a small instance for fast simulation. Which preset a
        board uses is board data (``rmsmp.boards``: ``board(name).config``)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(
                f"unknown preset {name!r}; known: {sorted(PRESETS)} (a board's default config: "
                "rmsmp.boards.board(name).config)"
            ) from None

    @classmethod
    def for_board(cls, name: str) -> AccelConfig:
        """``preset(name)``, under the name existing callers use (arch does not import boards,
        so a board without a preset of its own name, e.g. "pynq-z2", is found by
        ``rmsmp.boards.target_config``, which the library and the CLI use)."""
        try:
            return cls.preset(name)
        except ConfigError:
            raise ConfigError(
                f"unknown preset {name!r}; presets: {sorted(PRESETS)}; for any board or preset "
                "use rmsmp.boards.target_config(name)"
            ) from None


XC7Z020_MHZ = 150.0
"""Clock of the XC7Z020 (-1) presets whose netlist benchmarks/timing.py estimates at 150 MHz or
more on the part (benchmarks/results/timing_PRESET.json; tests/test_clock.py)."""
XC7Z045_MHZ = 200.0
"""Clock of the XC7Z045 (-2) presets whose netlist benchmarks/timing.py estimates at 200 MHz (issue
17's goal) or more on the part (benchmarks/results/timing_PRESET.json; tests/test_clock.py)."""

PRESETS: dict[str, AccelConfig] = {
    # The boards' mixed arrays, sized to fill the part by benchmarks/presets.py (the calibrated
    # resource model, boards/resources.py; packed Fixed-4 pairs and the lean shift rows of
    # hw/pe.py): the largest R x R array within 85% of LUT and DSP, its PoT-4 : Fixed-4 : Fixed-8
    # ratio derived from the LUT:DSP budget (quant.methods' rmsmp follows pynq-z1's).
    # XC7Z020: 24x24, 16:7:1 (67:29:4; the paper 60:35:5), estimated 72% of the LUTs, 75% of
    # the DSP48E1s, 69% of the BRAM.
    "pynq-z1": AccelConfig(
        name="pynq-z1",
        groups=(RowGroup("pot4", 16), RowGroup("fixed4", 7), RowGroup("fixed8", 1)),
        cols=24,
        w_depth=512,
        x_depth=8192,
        acc_depth=256,
        out_depth=256,
        q_depth=64,
        requant_lanes=6,
        clock_mhz=XC7Z020_MHZ,
    ),
    # XC7Z045: 56x56, 40:13:3 (71:23:5; the paper 65:30:5). R is a multiple of 8 so an X or
    # OUT entry fills whole 64-bit beats (60x60 left every entry's last beat half empty and
    # took 4% more ResNet-18 cycles, cycle model), and W is 512 entries deep (1,024 took 420 of the
    # part's 545 BRAM36 at 60x60 for 0.004% of ResNet-18's cycles). Yosys: 74% of the LUTs,
    # 73% of the DSP48E1s, 59% of the BRAM (benchmarks/results/resources_presets.json).
    "zc706": AccelConfig(
        name="zc706",
        groups=(RowGroup("pot4", 40), RowGroup("fixed4", 13), RowGroup("fixed8", 3)),
        cols=56,
        w_depth=512,
        x_depth=8192,
        acc_depth=512,
        out_depth=512,
        q_depth=64,
        requant_lanes=14,
        clock_mhz=XC7Z045_MHZ,
    ),
    # The Fixed-4-only baselines the mixed presets are measured against (benchmarks/e2e.py):
    # every row Fixed-4, two products per DSP48E1, the LUTs left to control and buffers; the
    # largest such array within 85% (benchmarks/presets.py). XC7Z020: 16x16, estimated 73% of
    # the DSP48E1s, 30% of the LUTs.
    "pynq-z1-fixed4-dsp": AccelConfig(
        name="pynq-z1-fixed4-dsp",
        groups=(RowGroup("fixed4", 16),),
        cols=16,
        w_depth=512,
        x_depth=8192,
        acc_depth=256,
        out_depth=256,
        q_depth=64,
        requant_lanes=4,
        clock_mhz=XC7Z020_MHZ,
    ),
    # XC7Z045: 36x36, estimated 79% of the DSP48E1s, 19% of the LUTs.
    "zc706-fixed4-dsp": AccelConfig(
        name="zc706-fixed4-dsp",
        groups=(RowGroup("fixed4", 36),),
        cols=36,
        w_depth=1024,
        x_depth=8192,
        acc_depth=512,
        out_depth=512,
        q_depth=64,
        requant_lanes=9,
        clock_mhz=XC7Z045_MHZ,
    ),
    # The strongest Fixed-4-only designs (benchmarks/presets.py): packed DSP rows plus Fixed-4
    # rows multiplied in LUTs (RowGroup.lut_rows, hw/pe_lut.py), the largest such array within
    # the mixed arrays' budget (85% of LUT and DSP). XC7Z020: 24x24, 10 DSP rows and 14 LUT
    # rows, estimated 82% of the LUTs, 75% of the DSP48E1s, 69% of the BRAM.
    "pynq-z1-fixed4-fill": AccelConfig(
        name="pynq-z1-fixed4-fill",
        groups=(RowGroup("fixed4", 24, lut_rows=14),),
        cols=24,
        w_depth=512,
        x_depth=8192,
        acc_depth=256,
        out_depth=256,
        q_depth=64,
        requant_lanes=6,
        clock_mhz=XC7Z020_MHZ,
    ),
    # XC7Z045: 56x56, 22 DSP rows and 34 LUT rows; Yosys 83% of the LUTs, 79% of the
    # DSP48E1s, 89% of the BRAM (benchmarks/results/resources_presets.json).
    "zc706-fixed4-fill": AccelConfig(
        name="zc706-fixed4-fill",
        groups=(RowGroup("fixed4", 56, lut_rows=34),),
        cols=56,
        w_depth=1024,
        x_depth=8192,
        acc_depth=512,
        out_depth=512,
        q_depth=64,
        requant_lanes=14,
        clock_mhz=XC7Z045_MHZ,
    ),
    # Not a board: a small instance for fast simulation, every scheme, tiny buffers so tiling
    # is exercised.
    "tiny": AccelConfig(
        name="tiny",
        groups=(
            RowGroup("pot4", 3),
            RowGroup("sp2-4", 2),
            RowGroup("fixed4", 2),
            RowGroup("fixed8", 1),
        ),
        cols=8,
        w_depth=128,
        x_depth=512,
        cmd_depth=2,
        token_depth=2,
        watchdog_cycles=2048,
        acc_depth=8,
        out_depth=8,
        q_depth=2,
        requant_lanes=2,
        clock_mhz=100.0,
    ),
}
