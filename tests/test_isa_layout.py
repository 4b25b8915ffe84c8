"""ISA encode/decode, entry layouts and AccelConfig JSON/hash/validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

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
        with pytest.raises(IsaError):
            isa.encode(cfg, op, **{k: 0 for k in list(fields)[1:]})


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
    assert dataclasses.replace(cfg, groups=groups).hash != cfg.hash


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
    with pytest.raises(ConfigError, match="unknown board"):
        AccelConfig.for_board("zedboard")


def test_every_opcode_in_layout():
    cfg = PRESETS["pynq-z1"]
    assert set(isa.layout(cfg)) == set(Opcode)
