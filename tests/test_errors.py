"""Bad input gets the right, clear error: runtime, Program files, compiler and GoldenDevice."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest
from graphgen import gemm_word, random_graph

from rmsmp.arch import AccelConfig, RowGroup, isa, layout, numerics
from rmsmp.arch.isa import Buf, Error, Opcode
from rmsmp.arch.layout import Entry
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import CompileError, lower
from rmsmp.host.device import DeviceTimeoutError
from rmsmp.host.errors import AcceleratorError, ConfigMismatchError, ProgramFormatError
from rmsmp.host.program import Program, Segment
from rmsmp.host.runtime import run
from rmsmp.sim.golden import GoldenDevice

TINY = AccelConfig.for_board("tiny")
PYNQ = AccelConfig.for_board("pynq-z1")


@pytest.fixture(scope="module")
def prog():
    rng = np.random.default_rng(0)
    graph = random_graph(rng, TINY, (6,), [dict(kind="linear", n=5, lo=-128, hi=127)])
    return lower(graph, TINY, 2)


def test_wrong_shape(prog):
    with pytest.raises(ValueError, match=r"shape \(2, 7\), expected \(B, 6\)"):
        run(prog, np.zeros((2, 7), np.int8))
    with pytest.raises(ValueError, match="expected"):
        run(prog, np.zeros(6, np.int8))
    with pytest.raises(ValueError, match="empty"):
        run(prog, np.zeros((0, 6), np.int8))


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.float16, np.complex64])
def test_wrong_dtype(prog, dtype):
    with pytest.raises(TypeError, match="float32/float64.*int8/int16/int32/int64"):
        run(prog, np.zeros((1, 6), dtype))


def test_not_an_array_and_out_of_range(prog):
    with pytest.raises(TypeError, match="numpy array"):
        run(prog, [[0] * 6])
    with pytest.raises(ValueError, match=r"quantized to \[-128, 127\]"):
        run(prog, np.full((1, 6), 300, np.int16))
    with pytest.raises(ValueError, match="NaN"):
        run(prog, np.full((1, 6), np.nan, np.float32))


def test_unknown_backend(prog):
    with pytest.raises(ValueError, match="unknown backend"):
        run(prog, np.zeros((1, 6), np.int8), backend="fpga")


def test_config_mismatch(prog):
    dev = GoldenDevice(PYNQ, prog.window_size)
    with pytest.raises(ConfigMismatchError) as e:
        run(prog, np.zeros((1, 6), np.int8), device=dev)
    assert prog.config_hash in str(e.value) and PYNQ.hash in str(e.value)
    assert "recompile" in str(e.value)


def test_small_device_window(prog):
    dev = GoldenDevice(TINY, 64)
    with pytest.raises(ValueError, match="larger window"):
        run(prog, np.zeros((1, 6), np.int8), device=dev)


def _patched(prog, pc, word):
    """``prog`` with instruction ``pc`` replaced by ``word``."""
    n = prog.config.insn_bits // 8
    data = bytearray(prog.segments["insn"].data)
    data[pc * n : (pc + 1) * n] = word.to_bytes(n, "little")
    return Program(**{**prog.__dict__, "segments": {**prog.segments, "insn": Segment(0, data)}})


@pytest.fixture(scope="module")
def prog2():
    rng = np.random.default_rng(1)
    specs = [dict(kind="linear", n=9), dict(kind="linear", n=5, lo=-128, hi=127)]
    return lower(random_graph(rng, TINY, (6,), specs), TINY, 2)


def test_accelerator_error_names_code_pc_layer(prog2):
    x = np.zeros((1, 6), np.int8)
    owner = [prog2.pass_at(pc).name for pc in range(prog2.insn_count)]
    last_l0, first_l1 = len(owner) - 1 - owner[::-1].index("l0"), owner.index("l1")
    for pc, layer in ((last_l0, "l0"), (first_l1, "l1")):
        with pytest.raises(AcceleratorError) as e:
            run(_patched(prog2, pc, 0), x)
        assert (e.value.code, e.value.pc, e.value.layer) == ("ILLEGAL_OPCODE", pc, layer)
        assert "fetch unit" in str(e.value) and "recompile it with rmsmp.compile" in str(e.value)


def test_inconsistent_tokens_are_a_deadlock(prog2):
    """Dropping a producer's push leaves one more pop than pushes on that counter: DEADLOCK."""
    insns = [isa.decode(TINY, w) for w in isa.from_bytes(TINY, prog2.segments["insn"].data)]
    pc = next(i for i, n in enumerate(insns) if n.op is Opcode.LOAD and n.push_next)
    word = isa.encode(TINY, Opcode.LOAD, **{**insns[pc].args, "push_next": 0})
    with pytest.raises(AcceleratorError) as e:
        run(_patched(prog2, pc, word), np.zeros((1, 6), np.int8))
    assert e.value.code == "DEADLOCK"
    assert "dependency tokens" in str(e.value)
    assert 0 <= e.value.pc <= prog2.insn_count


class _HangingDevice(GoldenDevice):
    def wait(self, timeout_cycles):
        raise DeviceTimeoutError("stuck")


def test_timeout_is_reported(prog):
    dev = _HangingDevice(TINY, prog.window_size)
    with pytest.raises(TimeoutError, match=r"did not finish within 1234 cycles.*larger timeout"):
        run(prog, np.zeros((1, 6), np.int8), device=dev, timeout_cycles=1234)


def test_program_file_errors(prog, tmp_path):
    good = tmp_path / "good.rmsmp"
    prog.save(good)
    blob = good.read_bytes()

    trunc = tmp_path / "trunc.rmsmp"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ProgramFormatError, match="truncated or not an rmsmp Program"):
        Program.load(trunc)

    garbage = tmp_path / "garbage.rmsmp"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ProgramFormatError, match="recompile it with rmsmp.compile"):
        Program.load(garbage)

    def rewrite(name, header_fn=None, blob_fn=None, drop=None):
        path = tmp_path / name
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w") as zout:
            for item in zin.namelist():
                data = zin.read(item)
                if item == drop:
                    continue
                if item == "header.json" and header_fn:
                    h = json.loads(data)
                    header_fn(h)
                    data = json.dumps(h).encode()
                if item == "w.bin" and blob_fn:
                    data = blob_fn(data)
                zout.writestr(item, data)
        return path

    with pytest.raises(ProgramFormatError, match="magic"):
        Program.load(rewrite("magic.rmsmp", lambda h: h.update(magic="npz")))
    with pytest.raises(ProgramFormatError, match="version 99 is not supported"):
        Program.load(rewrite("ver.rmsmp", lambda h: h.update(version=99)))
    with pytest.raises(ProgramFormatError, match="version 1 is not supported.*this rmsmp"):
        Program.load(rewrite("v1.rmsmp", lambda h: h.update(version=1)))
    with pytest.raises(ProgramFormatError, match=r"missing keys \['insn_count'\]"):
        Program.load(rewrite("nocount.rmsmp", lambda h: h.pop("insn_count")))
    with pytest.raises(ProgramFormatError, match="checksum mismatch"):
        Program.load(rewrite("sum.rmsmp", blob_fn=lambda d: bytes([d[0] ^ 1]) + d[1:]))
    with pytest.raises(ProgramFormatError, match=r"missing keys \['batch'\]"):
        Program.load(rewrite("keys.rmsmp", lambda h: h.pop("batch")))
    with pytest.raises(ProgramFormatError, match="segment 'q' is missing"):
        Program.load(rewrite("seg.rmsmp", drop="q.bin"))
    with pytest.raises(ProgramFormatError, match="no header.json"):
        Program.load(rewrite("nohdr.rmsmp", drop="header.json"))
    with pytest.raises(ProgramFormatError, match="config hash"):
        Program.load(rewrite("hash.rmsmp", lambda h: h.update(config_hash="0" * 16)))


def _linear(name, w, fmts, lo=-128, hi=127):
    n = w.shape[0]
    ones = np.ones(n, dtype=np.int64)
    return IntLayer(name, "linear", w, fmts, 0 * ones, ones, 0 * ones, lo, hi, 1.0, 1.0)


def test_compile_errors():
    g = IntGraph([_linear("fc", np.ones((2, 4), np.int64), ["sp2-4", "pot4"])], (4,), 1.0)
    with pytest.raises(
        CompileError, match=r"fc.*'sp2-4'.*'pynq-z1'.*\['pot4', 'fixed4', 'fixed8'\]"
    ):
        lower(g, PYNQ, 1)
    wide = AccelConfig("w24", (RowGroup("fixed8", 8),), cols=8, acc_bits=24, requant_lanes=2)
    big = IntGraph([_linear("big", np.full((2, 600), 127, np.int64), ["fixed8"] * 2)], (600,), 1.0)
    with pytest.raises(CompileError, match="big.*overflows the 24-bit accumulator"):
        lower(big, wide, 1)
    wide_out = IntGraph([_linear("u8", np.ones((1, 4), np.int64), ["fixed4"], 0, 255)], (4,), 1.0)
    with pytest.raises(CompileError, match="u8.*output range"):
        lower(wide_out, TINY, 1)
    with pytest.raises(CompileError, match="batch"):
        lower(wide_out, TINY, 0)


# --- GoldenDevice error codes on hand-assembled instruction lists ---------------------------

SIZE = 4096


def _dev(cfg=TINY):
    dev = GoldenDevice(cfg, SIZE)
    dev.write_reg("WINDOW_BASE", dev.window_base)
    dev.write_reg("WINDOW_LIMIT", dev.window_base + SIZE)
    return dev


def _gemm(**kw):
    return gemm_word(TINY, **kw)


def _load(buf=Buf.X, sram=0, dram=0, x_size=1, y_size=1, x_stride=0, **flags):
    args = dict(buf=buf, sram=sram, dram=dram, y_size=y_size, x_size=x_size, x_stride=x_stride)
    return isa.encode(TINY, Opcode.LOAD, **args, **flags)


def _store(sram=0, dram=0, x_size=1, y_size=1, x_stride=0, **flags):
    args = dict(sram=sram, dram=dram, y_size=y_size, x_size=x_size, x_stride=x_stride)
    return isa.encode(TINY, Opcode.STORE, **args, **flags)


def _sync(**flags):
    return isa.encode(TINY, Opcode.SYNC, **flags)


def _run(dev, words, insn_addr=1024):
    dev.write(insn_addr, isa.to_bytes(dev.config, words))
    dev.write_reg("INSN_ADDR", insn_addr)
    dev.write_reg("INSN_COUNT", len(words))
    dev.write_reg("CTRL", 1)
    dev.wait(10)
    return Error(dev.read_reg("ERROR")), dev.read_reg("PC"), dev.read_reg("STATUS")


DONE, FAILED = 2, 6
"""STATUS after a run: done, and done with the error bit."""


def test_golden_identity_registers():
    dev = _dev()
    assert dev.read_reg("MAGIC") == 0x524D5350
    assert (dev.read_reg("CONFIG_HASH_HI") << 32 | dev.read_reg("CONFIG_HASH_LO")) == TINY.hash_int
    assert dev.read_reg("CTRL") == 0
    with pytest.raises(ValueError, match="read-only"):
        dev.write_reg("STATUS", 0)
    with pytest.raises(KeyError, match="no register"):
        dev.read_reg("FOO")


def _chain():
    """LOAD -> GEMM -> STORE, ordered by tokens."""
    return [_load(push_next=1), _gemm(pop_prev=1, push_next=1), _store(dram=256, pop_prev=1)]


def test_golden_ok_run_sets_done():
    dev = _dev()
    assert _run(dev, _chain()) == (Error.NONE, 3, DONE)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.FETCH


@pytest.mark.parametrize(
    "word",
    [
        _gemm(oh_count=0),
        _gemm(c_count=0),
        _gemm(kh=0),
        _gemm(stride_x=0),
        _gemm(tile_w=0),
        _gemm(w_base=TINY.w_depth - 1, c_count=2),
        _gemm(w_base=TINY.w_depth - 8, kh=3, kw=3),
        _gemm(x_base=TINY.x_depth - 4, c_count=2, c_stride=3, tile_w=2),
        _gemm(lo=5, hi=4),
        _gemm(final=0, acc_base=TINY.acc_depth - 1, ow_count=2),
        _gemm(reset=0, acc_base=TINY.acc_depth - 2, oh_count=3),
        _gemm(o_base=TINY.out_depth - 1, ow_count=2),
        _load(buf=Buf.R, sram=TINY.out_depth - 1, x_size=2),
        _gemm(max=1, reset=0),
        _gemm(res=1, r_base=TINY.out_depth - 1, ow_count=2),
        _load(x_size=0),
        _load(y_size=0),
        _load(y_size=2, x_size=2, x_stride=1),
        _load(buf=Buf.Q, sram=1, x_size=2),
        _load(buf=Buf.W, sram=TINY.w_depth - 2, x_size=3),
        _load(pop_prev=1),
        _store(x_size=0),
        _store(sram=TINY.out_depth - 1, x_size=2),
        _store(sram=TINY.out_depth - 4, y_size=2, x_size=3, x_stride=3),
        _store(push_next=1),
    ],
)
def test_golden_bad_operand(word):
    dev = _dev()
    assert _run(dev, [_load(), word, _load()]) == (Error.BAD_OPERAND, 1, FAILED)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.FETCH


def test_golden_gemm_in_range_edges_are_accepted():
    dev = _dev()
    words = [
        _gemm(reset=1, final=1, acc_base=TINY.acc_depth - 1, ow_count=2, o_base=TINY.out_depth - 2),
        _gemm(w_base=TINY.w_depth - 2, c_count=2, x_base=TINY.x_depth - 4, c_stride=2, tile_w=2),
        _gemm(w_base=TINY.w_depth - 9, kh=3, kw=3, pad_top=2, pad_left=2),
    ]
    assert _run(dev, words) == (Error.NONE, 3, DONE)


def test_golden_check_failure_after_executed_instructions():
    """Fetch stops at the failing instruction (PC = its index); what it dispatched before runs."""
    dev = _dev()
    dev.write(64, layout.pack(TINY, Entry.X, np.full((1, TINY.cols), 7)))
    q = layout.q_values(np.zeros(TINY.rows), 1, numerics.BIAS_FRAC_BITS)[None]
    dev.write(128, layout.pack(TINY, Entry.Q, q))
    fmts = [numerics.weight_format(f) for f in layout.row_formats(TINY)]
    w = np.concatenate([np.full(TINY.cols, f.encode(1)) for f in fmts])[None]
    dev.write(256, layout.pack(TINY, Entry.W, w))
    words = [
        _load(Buf.W, dram=32),
        _load(Buf.Q, dram=16),
        _load(Buf.X, dram=8, push_next=1),
        _gemm(pop_prev=1, push_next=1),
        _store(dram=64, pop_prev=1),
        _gemm(c_count=0),
        _load(Buf.X, dram=8, sram=1),
    ]
    assert _run(dev, words) == (Error.BAD_OPERAND, 5, FAILED)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.FETCH
    out = layout.unpack(TINY, Entry.OUT, dev.read(512, layout.entry_bytes(TINY, Entry.OUT)))
    assert out.tolist() == [[7 * TINY.cols] * TINY.rows]
    assert not dev.x[1].any()  # the LOAD after the failing GEMM was never dispatched
    words[5] = 0
    assert _run(dev, words)[:2] == (Error.ILLEGAL_OPCODE, 5)


# --- dependency tokens and deadlocks --------------------------------------------------------


def test_pop_with_nothing_pushed_deadlocks():
    """A GEMM pops a token no LOAD pushed: DEADLOCK, PC = the instructions fetch dispatched."""
    dev = _dev()
    dev.write(64, layout.pack(TINY, Entry.X, np.full((1, TINY.cols), 3)))
    dev.write(512, bytes(range(8)))
    words = [_load(dram=8), _gemm(pop_prev=1, push_next=1), _store(dram=64, pop_prev=1)]
    assert _run(dev, words) == (Error.DEADLOCK, 3, FAILED)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.FETCH
    assert dev.x[0].tolist() == [3] * TINY.cols  # the LOAD ran
    assert dev.read(512, 8) == bytes(range(8))  # the STORE never did
    words[0] = _load(dram=8, push_next=1)
    assert _run(dev, words) == (Error.NONE, 3, DONE)


def test_full_command_queue_with_a_blocked_unit_deadlocks():
    """The LOAD that would unblock the compute unit sits behind a full compute queue.

    TINY has two-entry queues: the blocked GEMM is the unit's current instruction, two more wait
    in the queue, and fetch stops at the fourth; with deeper queues the same program runs.
    """
    words = [_gemm(pop_prev=1), _gemm(), _gemm(), _gemm(), _load(push_next=1)]
    assert TINY.cmd_depth == 2
    assert _run(_dev(), words) == (Error.DEADLOCK, 3, FAILED)
    deep = dataclasses.replace(TINY, cmd_depth=3)
    assert _run(_dev(deep), words) == (Error.NONE, 5, DONE)
    # an instruction that fails the check behind the stall is never reached
    assert _run(_dev(), [*words[:4], _gemm(lo=1, hi=0)]) == (Error.DEADLOCK, 3, FAILED)
    assert _run(_dev(deep), [*words[:4], _gemm(lo=1, hi=0)]) == (Error.BAD_OPERAND, 4, FAILED)


def test_full_token_counter_blocks_the_producer():
    """Three pushes into a two-token counter that nobody pops: the third LOAD runs but cannot
    push, so the run ends with DEADLOCK; with one consumer it ends normally."""
    assert TINY.token_depth == 2
    loads = [_load(sram=i, push_next=1) for i in range(3)]
    assert _run(_dev(), loads) == (Error.DEADLOCK, 3, FAILED)
    assert _run(_dev(), [*loads[:2]]) == (Error.NONE, 2, DONE)  # leftover tokens are fine
    assert _run(_dev(), [*loads, _gemm(pop_prev=1)]) == (Error.NONE, 4, DONE)


def test_sync_orders_store_before_load():
    """STORE -> SYNC -> LOAD through the store->compute and compute->load counters: the LOAD
    reads what the STORE wrote."""
    dev = _dev()
    dev.out[0] = np.arange(TINY.rows) - 4
    words = [
        _store(dram=64, push_prev=1),
        _sync(pop_next=1, push_prev=1),
        _load(dram=64, pop_next=1),
    ]
    assert _run(dev, words) == (Error.NONE, 3, DONE)
    assert dev.x[0].tolist() == (np.arange(TINY.rows) - 4).tolist()
    assert _run(_dev(), words[:1] + words[2:]) == (Error.DEADLOCK, 2, FAILED)


def test_bad_window_registers():
    """WINDOW_BASE must be burst-aligned and WINDOW_LIMIT not below it: BAD_WINDOW, PC 0,
    nothing runs."""
    assert TINY.window_align == TINY.max_burst * TINY.axi_data_bits // 8
    dev = GoldenDevice(TINY, SIZE + TINY.window_align)
    dev.write(TINY.window_align + 64, layout.pack(TINY, Entry.X, np.full((1, TINY.cols), 9)))
    for base_off, limit_off in ((64, SIZE), (8, SIZE), (TINY.window_align - 8, SIZE), (0, -8)):
        dev.write_reg("WINDOW_BASE", dev.window_base + base_off)
        dev.write_reg("WINDOW_LIMIT", dev.window_base + limit_off)
        assert _run(dev, [_load(dram=8)]) == (Error.BAD_WINDOW, 0, FAILED)
        assert not dev.x.any()
    dev.write_reg("WINDOW_BASE", dev.window_base + TINY.window_align)
    dev.write_reg("WINDOW_LIMIT", dev.window_base + SIZE + TINY.window_align)
    # INSN_ADDR and dram are offsets from WINDOW_BASE
    dev.write(TINY.window_align + 1024, isa.to_bytes(TINY, [_load(dram=8)]))
    dev.write_reg("INSN_ADDR", 1024)
    dev.write_reg("CTRL", 1)
    assert (dev.read_reg("ERROR"), dev.read_reg("PC"), dev.read_reg("STATUS")) == (0, 1, DONE)
    assert dev.x[0].tolist() == [9] * TINY.cols


def test_golden_dma_window_errors():
    dev = _dev()
    xb = layout.entry_bytes(TINY, Entry.X)
    last = SIZE // 8 - 1
    assert _run(dev, [_load(dram=(SIZE - xb) // 8)])[0] is Error.NONE
    assert _run(dev, [_load(), _load(dram=last, x_size=2)])[:2] == (Error.DMA_WINDOW, 1)
    assert _run(dev, [_store(dram=last + 1)])[:2] == (Error.DMA_WINDOW, 0)
    wb = layout.entry_bytes(TINY, Entry.W)
    assert _run(dev, [_load(buf=Buf.W, dram=(SIZE - wb) // 8 + 1)])[0] is Error.DMA_WINDOW
    # a 2-D block ends with its last row: 3 rows of 2 at stride 5 span 12 entries
    end = (SIZE - 12 * xb) // 8
    assert _run(dev, [_load(dram=end, y_size=3, x_size=2, x_stride=5)])[0] is Error.NONE
    assert _run(dev, [_load(dram=end + 1, y_size=3, x_size=2, x_stride=5)])[0] is Error.DMA_WINDOW


def test_golden_dma_window_error_has_no_effect():
    dev = _dev()
    dev.write(64, layout.pack(TINY, Entry.X, np.arange(1, 2 * TINY.cols + 1).reshape(2, -1)))
    dev.write_reg("WINDOW_LIMIT", dev.window_base + 72)
    assert _run(dev, [_load(dram=8, x_size=2)], insn_addr=0)[:2] == (Error.DMA_WINDOW, 0)
    assert not dev.x.any()
    assert _run(dev, [_load(dram=8, x_size=1)], insn_addr=0)[0] is Error.NONE
    assert dev.x[0].tolist() == list(range(1, TINY.cols + 1))


def test_golden_fetch_outside_window_and_axi_resp():
    dev = _dev()
    n = TINY.insn_bits // 8
    dev.write_reg("INSN_ADDR", SIZE - n)
    dev.write(SIZE - n, isa.to_bytes(TINY, [_load()]))
    dev.write_reg("INSN_COUNT", 2)
    dev.write_reg("CTRL", 1)
    assert (dev.read_reg("ERROR"), dev.read_reg("PC")) == (Error.DMA_WINDOW, 1)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.FETCH
    dev.write_reg("WINDOW_LIMIT", dev.window_base + 2 * SIZE)
    assert _run(dev, [_load(dram=SIZE // 8)])[:2] == (Error.AXI_RESP, 0)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.LOAD
    assert _run(dev, [_load(), _store(dram=SIZE // 8)])[:2] == (Error.AXI_RESP, 1)
    assert dev.read_reg("FAULT_UNIT") == isa.Unit.STORE


def test_golden_illegal_opcode():
    dev = _dev()
    for word in (0, 0xF, 5, 0xFFFF_FFF0):
        assert _run(dev, [_load(), word])[:2] == (Error.ILLEGAL_OPCODE, 1)


def test_golden_buffers_persist_between_runs():
    dev = _dev()
    fmts = [numerics.weight_format(f) for f in layout.row_formats(TINY)]
    codes = np.concatenate([np.full(TINY.cols, f.encode(1)) for f in fmts])[None]
    dev.write(0, layout.pack(TINY, Entry.W, codes))
    dev.write(256, layout.pack(TINY, Entry.X, np.full((1, TINY.cols), 3)))
    q = layout.q_values(np.zeros(TINY.rows), 1, numerics.BIAS_FRAC_BITS)[None]
    dev.write(512, layout.pack(TINY, Entry.Q, q))
    assert _run(dev, [_load(Buf.W), _load(Buf.X, dram=32), _load(Buf.Q, dram=64)])[0] is Error.NONE
    assert _run(dev, [_gemm(push_next=1), _store(dram=96, pop_prev=1)])[0] is Error.NONE
    out = layout.unpack(TINY, Entry.OUT, dev.read(768, layout.entry_bytes(TINY, Entry.OUT)))
    assert out.tolist() == [[3 * TINY.cols] * TINY.rows]
