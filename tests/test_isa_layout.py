"""ISA encode/decode, entry layouts and AccelConfig JSON/hash/validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from graphgen import GEMM_DEFAULTS

from rmsmp.arch import PRESETS, AccelConfig, ConfigError, RowGroup, isa, layout
from rmsmp.arch.isa import IsaError, Opcode
from rmsmp.arch.layout import Entry

PRESET_NAMES = sorted(PRESETS)


def _random_args(rng, fields):
    out = {}
    for name, f in fields.items():
        lo, hi = (
            (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1)
            if f.signed
            else (0, (1 << f.width) - 1)
        )
        out[name] = int(rng.integers(lo, hi, endpoint=True))
    return out


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_encode_decode_round_trip(preset):
    cfg = AccelConfig.for_board(preset)
    rng = np.random.default_rng(0)
    for op, fields in isa.layout(cfg).items():
        for _ in range(200):
            args = _random_args(rng, fields)
            word = isa.encode(cfg, op, **args)
            assert 0 <= word < 1 << cfg.insn_bits
            insn = isa.decode(cfg, word)
            assert insn.op is op and insn.args == args
        words = [isa.encode(cfg, op, **_random_args(rng, fields)) for _ in range(5)]
        assert isa.from_bytes(cfg, isa.to_bytes(cfg, words)) == words


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_out_of_range_fields_rejected(preset):
    cfg = AccelConfig.for_board(preset)
    for op, fields in isa.layout(cfg).items():
        base = {k: 0 for k in fields}
        for name, f in fields.items():
            too_big = (1 << (f.width - 1)) if f.signed else (1 << f.width)
            with pytest.raises(IsaError, match=name):
                isa.encode(cfg, op, **{**base, name: too_big})
            low = -(1 << (f.width - 1)) - 1 if f.signed else -1
            with pytest.raises(IsaError, match=name):
                isa.encode(cfg, op, **{**base, name: low})
        own = [k for k in fields if k not in isa.TOKEN_FLAGS]
        if own:  # every field but the token flags must be given
            with pytest.raises(IsaError, match="takes fields"):
                isa.encode(cfg, op, **{k: 0 for k in own[1:]})
        with pytest.raises(IsaError, match="takes fields"):
            isa.encode(cfg, op, **base, bogus=0)
        word = isa.encode(cfg, op, **{k: 0 for k in own})
        assert isa.decode(cfg, word).args == {k: 0 for k in fields}


def test_illegal_opcodes_decode_to_none():
    cfg = PRESETS["tiny"]
    assert isa.decode(cfg, 0) is None
    assert isa.decode(cfg, 0xF) is None


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("kind", list(Entry))
def test_layout_pack_unpack_round_trip(preset, kind):
    cfg = AccelConfig.for_board(preset)
    rng = np.random.default_rng(1)
    widths = layout.field_widths(cfg, kind)
    raw = np.stack([rng.integers(0, 1 << int(w), size=7) for w in widths], axis=1)
    blob = layout.pack(cfg, kind, raw)
    assert len(blob) == 7 * layout.entry_bytes(cfg, kind)
    assert np.array_equal(layout.unpack(cfg, kind, blob, signed=False), raw)
    signed = np.where(raw >= 1 << (widths - 1), raw - (1 << widths), raw)
    assert np.array_equal(layout.unpack(cfg, kind, blob, signed=True), signed)
    assert np.array_equal(layout.pack(cfg, kind, signed), blob)


def test_w_entry_field_order_is_row_major():
    cfg = PRESETS["tiny"]
    widths = layout.field_widths(cfg, Entry.W)
    bits = layout.row_bits(cfg)
    assert widths.tolist() == np.repeat(bits, cfg.cols).tolist()
    one = np.zeros((1, len(widths)), dtype=np.int64)
    r, c = 7, 3
    one[0, r * cfg.cols + c] = 1
    blob = int.from_bytes(layout.pack(cfg, Entry.W, one), "little")
    assert blob == 1 << int(layout.w_row_offsets(cfg)[r] + c * bits[r])


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_config_json_round_trip_and_hash(preset):
    cfg = AccelConfig.for_board(preset)
    back = AccelConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.hash == cfg.hash and len(cfg.hash) == 16
    assert cfg.hash_int == int(cfg.hash, 16)
    assert dataclasses.replace(cfg, name="renamed").hash == cfg.hash
    assert dataclasses.replace(cfg, clock_mhz=cfg.clock_mhz + 1).hash != cfg.hash
    assert dataclasses.replace(cfg, w_depth=cfg.w_depth * 2).hash != cfg.hash
    groups = (
        *cfg.groups[:-1],
        RowGroup(cfg.groups[-1].fmt, cfg.groups[-1].rows + cfg.requant_lanes),
    )
    more_rows = dataclasses.replace(cfg, groups=groups, cols=cfg.cols + cfg.requant_lanes)
    assert more_rows.hash != cfg.hash
    for k in ("cmd_depth", "token_depth", "watchdog_cycles"):
        assert dataclasses.replace(cfg, **{k: getattr(cfg, k) + 1}).hash != cfg.hash


def test_preset_hashes_differ():
    assert len({c.hash for c in PRESETS.values()}) == len(PRESETS)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(requant_lanes=3), "requant_lanes"),
        (dict(w_depth=500), "w_depth"),
        (dict(q_depth=3), "q_depth"),
        (dict(groups=(RowGroup("fixed4", 8),) * 2), "groups"),
        (dict(acc_bits=16), "acc_bits"),
        (dict(cols=0), "cols"),
        (dict(cols=16), "cols: must equal the PE row count 8"),
        (dict(cmd_depth=0), "cmd_depth"),
        (dict(token_depth=0), "token_depth"),
        (dict(watchdog_cycles=0), "watchdog_cycles"),
        (dict(insn_bits=100), "insn_bits"),
        (dict(insn_bits=64), r"insn_bits: \w+ needs \d+ bits"),
    ],
)
def test_invalid_configs(change, match):
    base = PRESETS["tiny"]
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(base, **change)


def test_unknown_format_and_bad_json():
    with pytest.raises(ConfigError, match="unknown weight format"):
        RowGroup("pot8", 4)
    with pytest.raises(ConfigError, match="malformed"):
        AccelConfig.from_json("{not json")
    d = PRESETS["tiny"].to_dict()
    with pytest.raises(ConfigError, match="unknown config keys"):
        AccelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ConfigError, match="unknown preset .zedboard.*target_config"):
        AccelConfig.for_board("zedboard")


def test_every_opcode_in_layout():
    cfg = PRESETS["pynq-z1"]
    assert set(isa.layout(cfg)) == set(Opcode)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fields_packed_in_order_after_opcode_and_token_flags(preset):
    """Opcode in bits [0, 4), the four token flags next, then the opcode's fields, LSB-first."""
    cfg = AccelConfig.for_board(preset)
    for op, fields in isa.layout(cfg).items():
        ordered = list(fields.values())
        assert [f.name for f in ordered[:4]] == list(isa.TOKEN_FLAGS)
        pos = isa.OPCODE_BITS
        for f in ordered:
            assert f.offset == pos
            pos += f.width
        assert pos <= cfg.insn_bits
        for i, flag in enumerate(isa.TOKEN_FLAGS):
            word = isa.encode(
                cfg, op, **{k: 0 for k in fields if k not in isa.TOKEN_FLAGS}, **{flag: 1}
            )
            assert word == int(op) | 1 << (isa.OPCODE_BITS + i)


def test_sync_and_units():
    cfg = PRESETS["tiny"]
    assert isa.layout(cfg)[Opcode.SYNC].keys() == set(isa.TOKEN_FLAGS)
    word = isa.encode(cfg, Opcode.SYNC, pop_next=1, push_prev=1)
    insn = isa.decode(cfg, word)
    assert insn.op is Opcode.SYNC and insn.unit is isa.Unit.COMPUTE
    assert (insn.pop_prev, insn.pop_next, insn.push_prev, insn.push_next) == (0, 1, 1, 0)
    units = {op: isa.decode(cfg, isa.encode(cfg, op, **_zero_args(cfg, op))).unit for op in Opcode}
    assert units == {
        Opcode.LOAD: isa.Unit.LOAD,
        Opcode.GEMM: isa.Unit.COMPUTE,
        Opcode.SYNC: isa.Unit.COMPUTE,
        Opcode.STORE: isa.Unit.STORE,
    }


# --- isa.check: the one operand check -----------------------------------------------------------

TINY = PRESETS["tiny"]
WINDOW = 4096
_BASE = {
    Opcode.LOAD: dict(buf=int(isa.Buf.X), sram=0, dram=0, y_size=1, x_size=1, x_stride=0),
    Opcode.STORE: dict(sram=0, dram=0, y_size=1, x_size=1, x_stride=0),
    Opcode.GEMM: dict(GEMM_DEFAULTS),
    Opcode.SYNC: {},
}


def _zero_args(cfg, op):
    return {k: 0 for k in isa.layout(cfg)[op] if k not in isa.TOKEN_FLAGS}


def _insn(op, **kw):
    """A TINY instruction through encode/decode, so every field value is one the ISA can hold."""
    return isa.decode(TINY, isa.encode(TINY, op, **{**_BASE[op], **kw}))


def _raw_insn(op, **kw):
    """An Insn built directly, for values the fields of TINY cannot hold."""
    return isa.Insn(op, {**dict.fromkeys(isa.TOKEN_FLAGS, 0), **_BASE[op], **kw})


def _eb(kind):
    return layout.entry_bytes(TINY, kind)


L, S, G = Opcode.LOAD, Opcode.STORE, Opcode.GEMM
W, X, Q = (int(b) for b in (isa.Buf.W, isa.Buf.X, isa.Buf.Q))
BAD = isa.Error.BAD_OPERAND
CHECK_CASES = [
    # token flags toward a neighbour the unit does not have
    (L, dict(pop_prev=1), BAD),
    (L, dict(push_prev=1), BAD),
    (S, dict(pop_next=1), BAD),
    (S, dict(push_next=1), BAD),
    # LOAD
    (L, dict(buf=int(isa.Buf.R), sram=TINY.out_depth - 1, x_size=2), BAD),
    (G, dict(max=1, reset=0), BAD),
    (G, dict(max=1, final=0), BAD),
    (G, dict(res=1, final=0), BAD),
    (G, dict(res=1, r_base=TINY.out_depth - 1, ow_count=2), BAD),
    (L, dict(y_size=0), BAD),
    (L, dict(x_size=0), BAD),
    (L, dict(y_size=2, x_size=3, x_stride=2), BAD),  # rows would overlap in DDR
    (L, dict(buf=W, sram=TINY.w_depth - 2, x_size=3), BAD),
    (L, dict(buf=X, sram=TINY.x_depth - 5, y_size=2, x_size=3, x_stride=3), BAD),
    (L, dict(buf=Q, sram=1, x_size=2), BAD),
    (L, dict(buf=Q, sram=TINY.q_depth), BAD),
    (L, dict(dram=WINDOW // 8), isa.Error.DMA_WINDOW),
    (L, dict(buf=W, dram=(WINDOW - _eb(Entry.W)) // 8 + 1), isa.Error.DMA_WINDOW),
    (L, dict(dram=WINDOW // 8, x_size=0), BAD),  # the operand check comes first
    # STORE
    (S, dict(y_size=0), BAD),
    (S, dict(x_size=0), BAD),
    (S, dict(y_size=3, x_size=2, x_stride=1), BAD),
    (S, dict(sram=TINY.out_depth - 1, x_size=2), BAD),
    (S, dict(sram=2, y_size=2, x_size=4, x_stride=9), BAD),
    (S, dict(dram=(WINDOW - _eb(Entry.OUT)) // 8 + 1), isa.Error.DMA_WINDOW),
    # GEMM
    (G, dict(oh_count=0), BAD),
    (G, dict(ow_count=0), BAD),
    (G, dict(c_count=0), BAD),
    (G, dict(kh=0), BAD),
    (G, dict(kw=0), BAD),
    (G, dict(stride_y=0), BAD),
    (G, dict(stride_x=0), BAD),
    (G, dict(tile_h=0), BAD),
    (G, dict(tile_w=0), BAD),
    (G, dict(w_base=TINY.w_depth - 8, c_count=1, kh=3, kw=3), BAD),
    (G, dict(w_base=TINY.w_depth - 17, c_count=2, kh=3, kw=3), BAD),
    (G, dict(x_base=TINY.x_depth - 20, tile_h=4, tile_w=6), BAD),
    (G, dict(x_base=TINY.x_depth - 119, c_count=2, c_stride=100, tile_h=4, tile_w=5), BAD),
    (G, dict(q_base=TINY.q_depth), BAD),  # not encodable in TINY's 1-bit field: checked raw
    (G, dict(lo=5, hi=4), BAD),
    (G, dict(final=0, acc_base=TINY.acc_depth - 1, oh_count=2), BAD),
    (G, dict(reset=0, acc_base=TINY.acc_depth - 2, oh_count=1, ow_count=3), BAD),
    (G, dict(o_base=TINY.out_depth - 3, oh_count=2, ow_count=2), BAD),
]
ACCEPT_CASES = [
    (L, dict(pop_next=1, push_next=1)),
    (S, dict(pop_prev=1, push_prev=1)),
    (G, dict(pop_prev=1, pop_next=1, push_prev=1, push_next=1)),
    (Opcode.SYNC, dict(pop_prev=1, pop_next=1, push_prev=1, push_next=1)),
    (L, dict(buf=W, sram=TINY.w_depth - 3, x_size=3)),
    (L, dict(buf=Q, sram=TINY.q_depth - 1)),
    (L, dict(y_size=1, x_size=4, x_stride=0)),  # a single row's stride is unused
    (L, dict(y_size=3, x_size=2, x_stride=2)),  # rows may abut
    (L, dict(dram=(WINDOW - _eb(Entry.X)) // 8)),
    # a block ends after its last row: the stride after it is not part of it
    (L, dict(y_size=3, x_size=2, x_stride=5, dram=(WINDOW - 12 * _eb(Entry.X)) // 8)),
    (L, dict(buf=W, dram=(WINDOW - _eb(Entry.W)) // 8)),
    (S, dict(sram=TINY.out_depth - 4, y_size=2, x_size=2, x_stride=9)),
    (S, dict(dram=(WINDOW - _eb(Entry.OUT)) // 8)),
    (G, dict(w_base=TINY.w_depth - 18, c_count=2, kh=3, kw=3)),
    (G, dict(x_base=TINY.x_depth - 120, c_count=2, c_stride=100, tile_h=4, tile_w=5)),
    (G, dict(kh=7, kw=7, stride_y=3, stride_x=3, pad_top=7, pad_left=7, tile_h=1, tile_w=1)),
    (G, dict(q_base=TINY.q_depth - 1, lo=3, hi=3)),
    (G, dict(acc_base=TINY.acc_depth - 1, oh_count=2, ow_count=2, o_base=TINY.out_depth - 4)),
    (G, dict(reset=0, final=0, acc_base=TINY.acc_depth - 4, oh_count=2, ow_count=2)),
]


@pytest.mark.parametrize("op, kw, err", CHECK_CASES)
def test_check_rejects(op, kw, err):
    assert isa.check(TINY, _raw_insn(op, **kw), WINDOW) is err
    try:
        insn = _insn(op, **kw)
    except isa.IsaError:
        assert (op, list(kw)) == (G, ["q_base"])
    else:
        assert isa.check(TINY, insn, WINDOW) is err
    assert isa.check(TINY, _insn(op), WINDOW) is isa.Error.NONE


@pytest.mark.parametrize("op, kw", ACCEPT_CASES)
def test_check_accepts_edges(op, kw):
    assert isa.check(TINY, _insn(op, **kw), WINDOW) is isa.Error.NONE


def test_check_illegal_opcode_and_window_size():
    assert isa.check(TINY, None, WINDOW) is isa.Error.ILLEGAL_OPCODE
    assert isa.check(TINY, isa.decode(TINY, 0), WINDOW) is isa.Error.ILLEGAL_OPCODE
    insn = _insn(L, buf=W, x_size=2, dram=8)
    need = 64 + 2 * _eb(Entry.W)
    assert isa.check(TINY, insn, need) is isa.Error.NONE
    assert isa.check(TINY, insn, need - 1) is isa.Error.DMA_WINDOW
    assert isa.check(TINY, _insn(G), 0) is isa.Error.NONE  # GEMM and SYNC touch no DDR
    assert isa.check(TINY, _insn(Opcode.SYNC), 0) is isa.Error.NONE


# --- feature-map layout -------------------------------------------------------------------------


def test_fmap_layout_places_every_channel_and_round_trips():
    cfg = PRESETS["tiny"]
    rng = np.random.default_rng(2)
    b, c, h, w, chunks = 2, 13, 3, 5, 3
    x = rng.integers(-128, 128, size=(b, c, h, w))
    e = layout.to_fmap(cfg, x, chunks)
    assert e.shape == (b * chunks * h * w, cfg.cols)
    want = np.zeros_like(e)
    for bi, ci, yi, xi in np.ndindex(x.shape):
        want[layout.fmap_entry(chunks, h, w, bi, ci // cfg.cols, yi, xi), ci % cfg.cols] = x[
            bi, ci, yi, xi
        ]
    assert np.array_equal(e, want)
    assert layout.fmap_entry(chunks, h, w, 1, 2, 2, 4) == b * chunks * h * w - 1
    back = layout.from_fmap(cfg, e, b, chunks, h, w)
    assert back.shape == (b, chunks * cfg.cols, h, w)
    assert np.array_equal(back[:, :c], x) and not back[:, c:].any()
    with pytest.raises(ValueError, match="do not fit"):
        layout.to_fmap(cfg, x, 1)


def test_register_map():
    from rmsmp.arch import regs

    offs = [r.offset for r in regs.REGS]
    assert len(set(offs)) == len(offs) and all(o % regs.REG_BYTES == 0 for o in offs)
    assert max(offs) < 1 << regs.AXIL_ADDR_BITS
    for name in ("FAULT_UNIT", "LOAD_CYCLES", "STORE_CYCLES", "MAC_CYCLES", "DMA_BEATS"):
        assert regs.REG[name].access is regs.Access.RO
    with pytest.raises(KeyError, match="no register 'FOO'"):
        regs.offset("FOO")


def _bit_pack(cfg, kind, values) -> bytes:
    """The layout's definition, bit by bit: fields LSB-first, entries zero-padded to beats."""
    out = bytearray()
    for row in values:
        bits = []
        for v, w in zip(row, layout.field_widths(cfg, kind), strict=True):
            bits += [(int(v) >> b) & 1 for b in range(int(w))]
        bits += [0] * (layout.entry_bytes(cfg, kind) * 8 - len(bits))
        out += bytes(
            sum(bit << j for j, bit in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8)
        )
    return bytes(out)


ODD = dataclasses.replace(
    PRESETS["tiny"],
    name="odd",
    groups=(RowGroup("pot4", 3), RowGroup("fixed8", 2)),
    cols=5,
    requant_lanes=1,
)
"""15 four-bit fields per W entry: 60 bits, not whole bytes, so W takes the general path."""


@pytest.mark.parametrize("cfg", [PRESETS["tiny"], PRESETS["pynq-z1"], ODD], ids=lambda c: c.name)
def test_pack_matches_the_bit_level_definition_for_every_entry_kind(cfg):
    """Byte-aligned runs of equal widths (every preset's entries) and the general path (a W
    entry whose 4-bit run ends mid-byte) both give the defined bits, and unpack inverts them."""
    assert layout._runs(layout.field_widths(ODD, Entry.W)) is None
    rng = np.random.default_rng(5)
    for kind in Entry:
        widths = layout.field_widths(cfg, kind)
        v = np.stack([rng.integers(-(1 << (w - 1)), 1 << (w - 1), 7) for w in widths], axis=1)
        blob = layout.pack(cfg, kind, v)
        assert blob == _bit_pack(cfg, kind, v), kind
        assert np.array_equal(layout.unpack(cfg, kind, blob), v), kind
        unsigned = layout.unpack(cfg, kind, blob, signed=False)
        assert np.array_equal(unsigned, v & ((np.int64(1) << widths) - 1)), kind
