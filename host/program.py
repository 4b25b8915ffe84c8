"""A compiled Program: the DDR window image, its layer records and the I/O quantisation.

Written by ``rmsmp.compiler.lower``, read by ``rmsmp.host.runtime``; numpy only. On disk it is a
zip holding ``header.json`` (magic, format version, config, config hash, layers, the sha256 of
every blob) and one ``<segment>.bin`` per window segment.

Window layout (byte offsets from the window base, every region 64-byte aligned)::

    [instructions][W blobs][Q blobs][input map][the map each pass writes]...[output map]

The instruction, W and Q regions are the static ``segments``; the runtime writes the input map
and reads the output map for every batch, and the maps in between never leave the window.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..arch import AccelConfig, ConfigError
from .errors import ProgramFormatError
from .tensors import InputFold

MAGIC = "rmsmp-program"
FORMAT_VERSION = 4
ALIGN = 64
"""Byte alignment of every window region."""

_RECOMPILE = "recompile it with rmsmp.compile"


def align(n: int, a: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``a``."""
    return -(-n // a) * a


_PASS_WORK = {
    "conv": "convolution window walk + requant",
    "linear": "matrix-vector walk + requant",
    "copy": "shortcut copy into the block's channel order",
    "maxpool": "max-pool window walk",
    "avgpool": "average-pool window sum + exact divide",
    "pool": "global-average sum + requant",
}
"""What each kind of pass computes on the accelerator."""


@dataclass
class LayerRecord:
    """What the runtime and the reports need to know of one pass (a layer, a pool, or the copy
    that puts a shortcut in its layer's slot order).

    Shapes are per sample: ``in_shape`` is the (channel slots, H, W) map the pass reads,
    ``out_shape`` its logical output. It runs as a ``kernel`` convolution over ``in_chunks``
    channel chunks into ``out_tiles`` row tiles of ``out_hw`` pixels; its input and output maps
    live at ``in_offset`` / ``out_offset`` in the window in ``arch.layout``'s feature-map layout,
    in the regions named ``src`` and ``dst`` (``res``: the region it adds as a residual, "" for
    none). ``insn_count`` instructions belong to it, the first at byte ``insn_offset``
    (``Program.insn_owner`` says which). ``order``, ``x_tiles`` and ``w_groups`` describe the
    tiling; ``dma_bytes`` is what its instructions move, ``min_dma_bytes`` the weights, input,
    residual and output once.
    ``array_macs`` counts the MACs the array performs, padding slots included; ``macs`` the
    layer's own.
    """

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_chunks: int
    out_tiles: int
    out_hw: tuple[int, int]
    order: str
    x_tiles: int
    w_groups: int
    lo: int
    hi: int
    insn_offset: int
    insn_count: int
    w_offset: int
    w_size: int
    q_offset: int
    q_size: int
    in_offset: int
    in_size: int
    out_offset: int
    out_size: int
    macs: int
    array_macs: int
    dma_bytes: int
    min_dma_bytes: int
    src: str
    dst: str
    res: str

    def to_dict(self) -> dict:
        """Plain-data form (what the JSON header holds)."""
        return asdict(self)

    @property
    def op(self) -> str:
        """The pass's operation: its kind without the "+res" of a fused residual add."""
        return self.kind.partition("+")[0]

    def describe(self) -> str:
        """What the pass computes, for placement lists and summaries."""
        k = f"{self.kernel[0]}x{self.kernel[1]}/{self.stride[0]}"
        extra = " + residual add" if self.op != self.kind else ""
        return f"{self.name}: {k} {_PASS_WORK.get(self.op, self.op)}{extra}"

    @classmethod
    def from_dict(cls, d: dict) -> LayerRecord:
        """Inverse of ``to_dict``; tuples come back as tuples."""
        names = {f.name for f in fields(cls)}
        missing = names - set(d)
        if missing:
            raise ProgramFormatError(
                f"layer record is missing keys {sorted(missing)}; {_RECOMPILE}"
            )
        v = {k: d[k] for k in names}
        for k in ("in_shape", "out_shape", "kernel", "stride", "padding", "out_hw"):
            v[k] = tuple(int(i) for i in v[k])
        return cls(**v)


@dataclass
class Segment:
    """Static bytes placed at ``offset`` in the window."""

    offset: int
    data: bytes


@dataclass
class Program:
    """A compiled network for one AccelConfig and one batch size."""

    config: AccelConfig
    batch: int
    layers: list[LayerRecord]
    segments: dict[str, Segment]
    window_size: int
    insn_count: int
    input_shape: tuple[int, ...]
    input_scale: float
    input_lo: int
    input_hi: int
    output_shape: tuple[int, ...]
    output_scale: float
    output_slots: list[int]
    """Final layer's slot -> logical output channel, -1 for a padding slot."""
    input_slots: list[int]
    """Input map's slot -> logical input channel, -1 for a zero slot (a channel may fill
    several slots: a first layer can spread one 8-bit weight over several lanes)."""
    insn_owner: list[int]
    """Which pass each instruction belongs to, run-length coded as [pass, count, pass, ...]:
    passes interleave, since a pass's first loads are hoisted into the one before."""
    meta: dict = field(default_factory=dict)
    input_fold: InputFold | None = None
    """How the host folds the input into lanes before the slots (None: it does not); the
    first pass then reads ``input_fold.out_shape``."""

    def __repr__(self) -> str:
        """One line (config, batch, sizes), not the bytes; ``summary()`` has the layers."""
        return (
            f"Program(config={self.config.name!r} {self.config_hash}, batch={self.batch}, "
            f"input={self.input_shape}, output={self.output_shape}, layers={len(self.layers)}, "
            f"instructions={self.insn_count}, window={self.window_size} bytes)"
        )

    @property
    def config_hash(self) -> str:
        """Hash of the AccelConfig the Program was compiled for (16 hex digits)."""
        return self.config.hash

    @property
    def useful_macs(self) -> int:
        """The network's own MACs per batch (its convolutions and Linears; not the copies,
        pools or padding slots)."""
        return sum(r.macs for r in self.layers if r.op in ("conv", "linear"))

    @property
    def shape_bound_cycles(self) -> float:
        """Cycles per batch if the array never waited: every pass's array MACs over the peak."""
        return sum(r.array_macs for r in self.layers) / self.config.peak_macs_per_cycle

    def pass_at(self, pc: int) -> LayerRecord:
        """The pass instruction ``pc`` belongs to (the last pass past the end)."""
        runs = self.insn_owner
        at = 0
        for i in range(0, len(runs), 2):
            at += runs[i + 1]
            if pc < at:
                return self.layers[runs[i]]
        return self.layers[-1]

    def output_gather(self) -> np.ndarray:
        """Slot index of every logical output channel, in logical order."""
        slots = np.asarray(self.output_slots, dtype=np.int64)
        n = int(slots.max()) + 1
        gather = np.full(n, -1, dtype=np.int64)
        idx = np.flatnonzero(slots >= 0)
        gather[slots[idx]] = idx
        return gather

    def dequantize(self, y_int: np.ndarray) -> np.ndarray:
        """Integer outputs to real values (float32) with the output scale."""
        return (np.asarray(y_int, dtype=np.float64) * self.output_scale).astype(np.float32)

    def summary(self) -> str:
        """Human-readable table of the layers, tiling and window use."""
        cfg = self.config
        lines = [
            f"rmsmp Program for {cfg.name} (config {self.config_hash}), batch {self.batch}",
            f"input {self.input_shape} scale {self.input_scale:g} range "
            f"[{self.input_lo}, {self.input_hi}] -> output {self.output_shape} "
            f"scale {self.output_scale:g}",
            f"window {self.window_size} bytes, {self.insn_count} instructions, "
            f"{len(self.layers)} passes, every one on the accelerator; the host quantizes"
            f"{' and folds' if self.input_fold else ''} and lays out the input, and gathers the "
            "output",
            f"{'pass':<26}{'kind':<12}{'kernel':>7}{'in map':>14}{'out':>14}{'order':>15}"
            f"{'X tiles':>8}{'W grps':>7}{'insns':>7}{'MACs':>12}{'DMA/min':>8}",
        ]
        for r in self.layers:
            kern = f"{r.kernel[0]}x{r.kernel[1]}/{r.stride[0]}"
            inm = "x".join(map(str, r.in_shape))
            out = "x".join(map(str, r.out_shape))
            lines.append(
                f"{r.name:<26}{r.kind:<12}{kern:>7}{inm:>14}{out:>14}{r.order:>15}"
                f"{r.x_tiles:>8}{r.w_groups:>7}{r.insn_count:>7}{r.macs:>12}"
                f"{r.dma_bytes / r.min_dma_bytes:>8.2f}"
            )
        return "\n".join(lines)

    def _header(self) -> dict:
        return {
            "magic": MAGIC,
            "version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "config_hash": self.config_hash,
            "batch": self.batch,
            "layers": [r.to_dict() for r in self.layers],
            "segments": {
                k: {
                    "offset": s.offset,
                    "size": len(s.data),
                    "sha256": hashlib.sha256(s.data).hexdigest(),
                }
                for k, s in self.segments.items()
            },
            "window_size": self.window_size,
            "insn_count": self.insn_count,
            "input_shape": list(self.input_shape),
            "input_scale": self.input_scale,
            "input_lo": self.input_lo,
            "input_hi": self.input_hi,
            "output_shape": list(self.output_shape),
            "output_scale": self.output_scale,
            "output_slots": list(self.output_slots),
            "input_slots": list(self.input_slots),
            "insn_owner": list(self.insn_owner),
            "meta": self.meta,
            "input_fold": self.input_fold and self.input_fold.to_dict(),
        }

    def save(self, path: str | Path) -> None:
        """Write the Program file (a zip: header.json plus one blob per segment). The members
        carry a fixed timestamp, so the same Program is the same bytes whenever it is saved."""
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(_member("header.json"), json.dumps(self._header(), indent=1))
            for k, s in self.segments.items():
                z.writestr(_member(f"{k}.bin"), s.data)

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read a Program file, verifying magic, version, checksums and the config hash."""
        try:
            with zipfile.ZipFile(path) as z:
                try:
                    header = json.loads(z.read("header.json"))
                except KeyError:
                    raise ProgramFormatError(
                        f"{path}: no header.json, not an rmsmp Program; {_RECOMPILE}"
                    ) from None
                if not isinstance(header, dict):
                    raise ProgramFormatError(f"{path}: header is not a JSON object; {_RECOMPILE}")
                _check_header(path, header)
                blobs = {}
                for k in header["segments"]:
                    try:
                        blobs[k] = z.read(f"{k}.bin")
                    except KeyError:
                        raise ProgramFormatError(
                            f"{path}: segment {k!r} is missing; {_RECOMPILE}"
                        ) from None
        except (zipfile.BadZipFile, EOFError, zlib.error, UnicodeDecodeError) as e:
            raise ProgramFormatError(
                f"{path}: truncated or not an rmsmp Program ({e}); {_RECOMPILE}"
            ) from None
        except json.JSONDecodeError as e:
            raise ProgramFormatError(
                f"{path}: header.json is malformed ({e}); {_RECOMPILE}"
            ) from None
        try:
            return cls._from_header(path, header, blobs)
        except ProgramFormatError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ProgramFormatError(f"{path}: malformed header ({e}); {_RECOMPILE}") from None

    @classmethod
    def _from_header(cls, path: str | Path, h: dict, blobs: dict[str, bytes]) -> Program:
        segments = {}
        for k, meta in h["segments"].items():
            data = blobs[k]
            if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ProgramFormatError(
                    f"{path}: checksum mismatch in segment {k!r}, the file is corrupted; "
                    f"{_RECOMPILE}"
                )
            segments[k] = Segment(int(meta["offset"]), data)
        try:
            cfg = AccelConfig.from_json(h["config"])
        except (ConfigError, TypeError, KeyError) as e:
            raise ProgramFormatError(f"{path}: invalid config ({e}); {_RECOMPILE}") from None
        if cfg.hash != h["config_hash"]:
            raise ProgramFormatError(
                f"{path}: config hash {h['config_hash']} does not match its config "
                f"({cfg.hash}), the file is corrupted; {_RECOMPILE}"
            )
        return cls(
            config=cfg,
            batch=int(h["batch"]),
            layers=[LayerRecord.from_dict(d) for d in h["layers"]],
            segments=segments,
            window_size=int(h["window_size"]),
            insn_count=int(h["insn_count"]),
            input_shape=tuple(int(i) for i in h["input_shape"]),
            input_scale=float(h["input_scale"]),
            input_lo=int(h["input_lo"]),
            input_hi=int(h["input_hi"]),
            output_shape=tuple(int(i) for i in h["output_shape"]),
            output_scale=float(h["output_scale"]),
            output_slots=[int(i) for i in h["output_slots"]],
            input_slots=[int(i) for i in h["input_slots"]],
            insn_owner=[int(i) for i in h["insn_owner"]],
            meta=dict(h["meta"]),
            input_fold=h["input_fold"] and InputFold.from_dict(h["input_fold"]),
        )


_HEADER_KEYS = (
    "magic",
    "version",
    "config",
    "config_hash",
    "batch",
    "layers",
    "segments",
    "window_size",
    "insn_count",
    "input_shape",
    "input_scale",
    "input_lo",
    "input_hi",
    "output_shape",
    "output_scale",
    "output_slots",
    "input_slots",
    "insn_owner",
    "meta",
    "input_fold",
)


def _member(name: str) -> zipfile.ZipInfo:
    """A zip member named ``name`` with a fixed timestamp (zip's earliest) and compression."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _check_header(path: str | Path, h: dict) -> None:
    if h.get("magic") != MAGIC:
        raise ProgramFormatError(
            f"{path}: magic {h.get('magic')!r} is not {MAGIC!r}, not an rmsmp Program; {_RECOMPILE}"
        )
    if h.get("version") != FORMAT_VERSION:
        raise ProgramFormatError(
            f"{path}: Program format version {h.get('version')!r} is not supported (this rmsmp "
            f"reads version {FORMAT_VERSION}); {_RECOMPILE} with this rmsmp"
        )
    missing = [k for k in _HEADER_KEYS if k not in h]
    if missing:
        raise ProgramFormatError(f"{path}: header is missing keys {missing}; {_RECOMPILE}")
    for k, meta in h["segments"].items():
        if not isinstance(meta, dict) or {"offset", "size", "sha256"} - set(meta):
            raise ProgramFormatError(
                f"{path}: segment {k!r} entry needs offset, size and sha256; {_RECOMPILE}"
            )
