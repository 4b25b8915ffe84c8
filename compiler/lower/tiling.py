"""How a pass is cut to fit the buffers: its geometry as a convolution over channel chunks, the
input map cut into tiles (bands of output rows, and of columns when a row does not fit half of
X), the weights cut into groups of row tiles (or of channel chunks when one row tile's weights
do not fit half of W), what stays resident, and the loop order."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...arch import AccelConfig, isa, layout
from ...arch.layout import Entry
from .checks import CompileError, out_hw
from .passes import Pass

WGroup = tuple[tuple[int, int, int], ...]
"""A weight group: (row tile, first chunk, chunk count) of each row tile it holds."""

MIN_GEMM_MACS = 512
"""Output bands are cut so a GEMM runs at least this many array cycles (when the tile allows):
small bands let compute start on the first rows of a tile, and this keeps a GEMM's fixed cost
(pipeline fill and drain, ~20 cycles) a few percent of it."""


@dataclass(frozen=True)
class Geom:
    """A pass as a convolution over a channel-blocked map."""

    in_chunks: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    oh: int
    ow: int
    n_tiles: int
    per_chunk: bool

    @property
    def w_chunks(self) -> int:
        """Input chunks one row tile's weights cover (1 for a per-chunk pass)."""
        return 1 if self.per_chunk else self.in_chunks

    def first_chunk(self, tile: int) -> int:
        """First input chunk row tile ``tile`` reads."""
        return tile if self.per_chunk else 0


@dataclass(frozen=True)
class XTile:
    """Input rows [y0, y0+th) x columns [x0, x0+tw) of channel chunks [c0, c0+cn) of one image,
    for output rows [oy0, oy0+rows) x columns [ox0, ox0+cols). A tile holds every chunk unless
    one output's inputs do not fit half of X (``chunk_tiling``)."""

    b: int
    oy0: int
    rows: int
    ox0: int
    cols: int
    y0: int
    th: int
    x0: int
    tw: int
    c0: int
    cn: int


@dataclass(frozen=True)
class Tiling:
    """A pass's tiles and weight groups, their buffer entries, what stays resident (``x_res``:
    every X tile fits X at once; ``w_res``: every W group and Q row fit), the loop order
    (``w_outer``: weight groups outer, input tiles streamed under each) and the least work of
    one GEMM (``band_macs``, see ``MIN_GEMM_MACS``)."""

    geom: Geom
    tiles: tuple[XTile, ...]
    groups: tuple[WGroup, ...]
    x_sizes: tuple[int, ...]
    w_sizes: tuple[int, ...]
    x_res: bool
    w_res: bool
    w_outer: bool
    band_macs: int = MIN_GEMM_MACS

    @property
    def split(self) -> bool:
        """A row tile's input chunks are split over several groups (partial sums stay in ACC)."""
        return self.groups[0][0][2] < self.geom.w_chunks

    @property
    def chunk_tiles(self) -> bool:
        """The input tiles are cut by chunks too (``chunk_tiling``): the row tiles' partial sums
        interleave, one ACC entry each."""
        return self.tiles[0].cn < self.geom.in_chunks

    def matches(self, i_x: int, i_w: int) -> bool:
        """Whether input tile ``i_x`` holds every chunk that weight group ``i_w`` reads."""
        t = self.tiles[i_x]
        return all(t.c0 <= c0 and c0 + cn <= t.c0 + t.cn for _, c0, cn in self.groups[i_w])

    def band(self, t: XTile, group: WGroup, out_half: int) -> int:
        """Output rows per GEMM of tile ``t`` with ``group``: at least ``band_macs`` array
        cycles each for the group's smallest chunk count, within half of OUT."""
        k_min = min(cn for _, _, cn in group) * self.geom.kh * self.geom.kw
        return max(1, min(out_half // t.cols, -(-self.band_macs // (t.cols * k_min))))


def candidates(p: Pass, cfg: AccelConfig, batch: int) -> list[Tiling]:
    """The tilings the cost model chooses among, ``tile``'s first: the other loop order (where
    both sides stream more than one item), and output bands twice and four times as long (where
    that changes a band). Longer bands mean fewer GEMMs and stores to fetch and sequence, but a
    later first store; which wins depends on the pass."""
    base = tile(p, cfg, batch)
    out = [base]
    if not base.split and len(base.tiles) > 1 and len(base.groups) > 1:
        out.append(replace(base, w_outer=not base.w_outer))
    half = cfg.out_depth // 2
    for m in (2, 4):
        long = replace(base, band_macs=m * base.band_macs)
        if any(
            min(long.band(t, grp, half), t.rows) != min(base.band(t, grp, half), t.rows)
            for t in base.tiles
            for grp in base.groups
        ):
            out.append(long)
    return out


def tile(p: Pass, cfg: AccelConfig, batch: int) -> Tiling:
    """Tiles and groups as large as the buffer halves allow, in the loop order that moves fewer
    DDR bytes (the streamed side is loaded once per item of the outer side unless it stays
    resident); a split row tile keeps its partial sums in ACC, so its inputs go outer."""
    g = geometry(p, cfg)
    if g.h == g.w == 1 and not g.per_chunk and g.in_chunks > cfg.x_depth // 2:
        return chunk_tiling(g, cfg, batch)
    groups = w_groups(g, cfg, p.name)
    split = groups[0][0][2] < g.w_chunks
    max_out = cfg.acc_depth if split else g.oh * g.ow
    out_half = cfg.out_depth // 2
    tiles = x_tiles(g, batch, cfg.x_depth // 2, min(out_half, max_out), max_out, p.name)
    eb_x, eb_w, eb_q = (layout.entry_bytes(cfg, k) for k in (Entry.X, Entry.W, Entry.Q))
    x_sizes = tuple(t.cn * t.th * t.tw for t in tiles)
    w_sizes = tuple(0 if p.max else sum(n for _, _, n in grp) * g.kh * g.kw for grp in groups)
    x_res = sum(x_sizes) <= cfg.x_depth
    w_res = sum(w_sizes) <= cfg.w_depth and g.n_tiles <= cfg.q_depth
    x_bytes, w_bytes = sum(x_sizes) * eb_x, sum(w_sizes) * eb_w + g.n_tiles * eb_q
    w_outer_cost = w_bytes + x_bytes * (1 if x_res else len(groups))
    x_outer_cost = x_bytes + w_bytes * (1 if w_res else len(tiles))
    w_outer = w_outer_cost <= x_outer_cost and not split
    return Tiling(g, tiles, groups, x_sizes, w_sizes, x_res, w_res, w_outer)


def chunk_tiling(g: Geom, cfg: AccelConfig, batch: int) -> Tiling:
    """A 1x1 map whose chunks do not fit half of X (a Linear over a large map, read as
    channels): input tiles and weight groups cut into the same blocks of chunks, inputs outer,
    each row tile's partial sums kept in its own ACC entry from the first block to the last."""
    if g.n_tiles > cfg.acc_depth:
        raise CompileError(
            f"{g.n_tiles} row tiles of partial sums do not fit ACC ({cfg.acc_depth} entries); "
            "use a config with a deeper acc_depth"
        )
    cs = min(cfg.x_depth, cfg.w_depth) // 2
    blocks = [(c0, min(cs, g.in_chunks - c0)) for c0 in range(0, g.in_chunks, cs)]
    tiles = tuple(XTile(b, 0, 1, 0, 1, 0, 1, 0, 1, *bl) for b in range(batch) for bl in blocks)
    groups = tuple(((t, *bl),) for t in range(g.n_tiles) for bl in blocks)
    w_sizes = tuple(cn for _ in range(g.n_tiles) for _, cn in blocks)
    w_res = sum(w_sizes) <= cfg.w_depth and g.n_tiles <= cfg.q_depth
    return Tiling(g, tiles, groups, tuple(t.cn for t in tiles), w_sizes, False, w_res, False)


def geometry(p: Pass, cfg: AccelConfig) -> Geom:
    """The pass as a convolution the GEMM fields can express (a CompileError if not)."""
    slots, h, w = p.in_shape
    (kh, kw), stride, pad = p.kernel, p.stride, p.pad
    kmax = (1 << isa.KERNEL_BITS) - 1
    if kh > kmax or kw > kmax:
        raise CompileError(
            f"layer {p.name}: kernel {kh}x{kw} is larger than {kmax}x{kmax} (a Linear's or a "
            "global pool's kernel is its whole input map); pool the map down first"
        )
    oh, ow = out_hw(p.name, h, w, p.kernel, stride, pad)
    stride = (1 if oh == 1 else stride[0], 1 if ow == 1 else stride[1])  # one output: no step
    smax = (1 << isa.CONV_STRIDE_BITS) - 1
    if max(stride) > smax:
        raise CompileError(f"layer {p.name}: stride {stride} exceeds {smax}")
    if pad[0] >= kh or pad[1] >= kw or max(pad) >= 1 << isa.PAD_BITS:
        raise CompileError(
            f"layer {p.name}: padding {pad} must be smaller than the {kh}x{kw} kernel and at "
            f"most {(1 << isa.PAD_BITS) - 1} (an output that sees only padding is not "
            "supported); pad the input map instead"
        )
    nt = len(p.out_map) // cfg.rows
    return Geom(slots // cfg.cols, h, w, kh, kw, stride, pad, oh, ow, nt, p.per_chunk)


def x_tiles(
    g: Geom, batch: int, cap: int, out_cap: int, max_out: int, name: str
) -> tuple[XTile, ...]:
    """Input tiles of at most ``cap`` entries and ``max_out`` outputs covering every image."""
    sy, sx = g.stride
    py, px = g.pad

    def span(o0: int, n: int, s: int, p: int, k: int, size: int) -> tuple[int, int]:
        lo = max(0, o0 * s - p)
        return lo, min(size, (o0 + n - 1) * s - p + k) - lo

    def widest(n: int, s: int, k: int, size: int) -> int:
        """Input extent of ``n`` outputs anywhere in the map (padding clips only the edges)."""
        return min(size, (n - 1) * s + k)

    cols = min(g.ow, out_cap)
    while cols > 1 and g.in_chunks * g.kh * widest(cols, sx, g.kw, g.w) > cap:
        cols = max(1, cols // 2)
    tw = widest(cols, sx, g.kw, g.w)
    if g.in_chunks * widest(1, sy, g.kh, g.h) * tw > cap:
        raise CompileError(
            f"layer {name}: one output row's input window ({g.in_chunks} chunks x {g.kh} rows x "
            f"{tw} columns) does not fit half the X buffer ({cap} entries); use a config with a "
            "deeper x_depth"
        )
    rows = 1
    while (
        rows < g.oh
        and (rows + 1) * cols <= max_out
        and g.in_chunks * widest(rows + 1, sy, g.kh, g.h) * tw <= cap
    ):
        rows += 1
    tiles = []
    for b in range(batch):
        for oy0 in range(0, g.oh, rows):
            r = min(rows, g.oh - oy0)
            y0, th = span(oy0, r, sy, py, g.kh, g.h)
            for ox0 in range(0, g.ow, cols):
                c = min(cols, g.ow - ox0)
                xx0, xtw = span(ox0, c, sx, px, g.kw, g.w)
                tiles.append(XTile(b, oy0, r, ox0, c, y0, th, xx0, xtw, 0, g.in_chunks))
    return tuple(tiles)


def w_groups(g: Geom, cfg: AccelConfig, name: str) -> tuple[WGroup, ...]:
    """Weight groups that fit half of W and Q."""
    per_chunk = g.kh * g.kw
    w_half, q_half = cfg.w_depth // 2, max(1, cfg.q_depth // 2)
    if per_chunk > w_half:
        raise CompileError(
            f"layer {name}: one channel chunk of a {g.kh}x{g.kw} kernel needs {per_chunk} W "
            f"entries, more than half the W buffer ({w_half}); use a config with a deeper w_depth"
        )
    full = g.w_chunks * per_chunk
    if full <= w_half:
        per = min(w_half // full, q_half)
        return tuple(
            tuple((t, g.first_chunk(t), g.w_chunks) for t in range(t0, min(g.n_tiles, t0 + per)))
            for t0 in range(0, g.n_tiles, per)
        )
    cs = w_half // per_chunk
    return tuple(
        ((t, c0, min(cs, g.in_chunks - c0)),)
        for t in range(g.n_tiles)
        for c0 in range(0, g.in_chunks, cs)
    )
