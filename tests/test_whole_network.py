"""Whole residual CNNs as one Program: golden == IntGraph.evaluate == fake-quant torch, and
RTL == golden, with nothing on the host between the input and the logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cnngen import Net

import rmsmp
from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.quant.export import export

HOST_STEPS = ["quantize input", "input map layout", "gather output channels"]


def _case(seed: int, side: tuple[int, int]):
    """A random residual CNN, its input batch, its fake-quant model and integer graph."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cin = int(rng.integers(1, 4))
    s = int(rng.integers(*side))
    model = Net(rng, cin).eval()
    x = torch.from_numpy(rng.normal(0, 1.5, size=(int(rng.integers(1, 5)), cin, s, s))).float()
    qmodel = rmsmp.quantize(model, x, act_bits=int(rng.integers(2, 8)))
    return rng, x, qmodel, export(qmodel)


def _check_model(hw, gold) -> None:
    """The golden backend's cycle model against the RTL counters: MAC cycles and DMA beats are
    counts, equal; cycles and the load/store unit cycles within 3% (the issue's bar; on these
    networks the totals agree to a few cycles)."""
    assert (hw.mac_cycles, hw.dma_beats) == (gold.mac_cycles, gold.dma_beats)
    for a, b in ((hw.total_cycles, gold.total_cycles), (hw.load_cycles, gold.load_cycles)):
        assert abs(a - b) <= 0.03 * a, (a, b)
    assert abs(hw.store_cycles - gold.store_cycles) <= 0.03 * hw.store_cycles


def _check_run(res, graph, qmodel, x) -> None:
    ref = graph.evaluate(graph.quantize_input(x.numpy()))
    assert np.array_equal(res.output, ref)
    with torch.no_grad():
        fq = qmodel(x).numpy() / graph.output_scale
    # The fake-quant model is the integer graph's definition: 0 LSB apart, up to float noise.
    assert np.abs(res.output - fq).max() < 1e-6
    assert [s for s, where in res.placement if where == "host"] == HOST_STEPS


@pytest.mark.parametrize("seed", range(16))
def test_random_residual_cnns_run_whole_on_golden(seed: int) -> None:
    rng, x, qmodel, graph = _case(seed, (8, 13))
    cfg = AccelConfig.for_board("pynq-z1" if seed % 2 else "zc706")
    prog = lower(graph, cfg, int(rng.integers(1, 4)))
    assert not graph.is_chain and any(r.res for r in prog.layers)
    _check_run(run_with_stats(prog, x.numpy()), graph, qmodel, x)


@pytest.fixture(scope="module")
def rtl():
    from rmsmp.sim.verilator import RtlDevice

    dev = RtlDevice(AccelConfig.for_board("tiny"), 1 << 22)
    yield dev
    dev.close()


@pytest.mark.parametrize("seed", range(100, 112))
def test_random_residual_cnns_rtl_equals_golden(rtl, seed: int) -> None:
    """On the tiny preset (every scheme, tiny buffers, so every pass is tiled)."""
    rng, x, qmodel, graph = _case(seed, (6, 9))
    prog = lower(graph, rtl.config, int(rng.integers(1, 3)))
    kinds = {r.kind for r in prog.layers}
    assert "conv+res" in kinds and kinds & {"avgpool", "pool"}
    gold = run_with_stats(prog, x.numpy(), backend="golden")
    hw = run_with_stats(prog, x.numpy(), device=rtl)
    assert np.array_equal(hw.output, gold.output)
    assert hw.total_cycles > 0 and hw.mac_cycles > 0
    _check_model(hw, gold)
    _check_run(hw, graph, qmodel, x)


def test_max_pool_padding_never_wins_on_negative_maps() -> None:
    """A 3x3/2 pad-1 max pool of an all-negative map: the padded border must not give 0."""
    from rmsmp.compiler.ir import IntGraph, IntMaxPool

    graph = IntGraph([IntMaxPool("pool", (3, 3), (2, 2), (1, 1), 1.0)], (3, 7, 7), 1.0)
    x = -(np.arange(2 * 3 * 49).reshape(2, 3, 7, 7) % 120) - 1
    prog = lower(graph, AccelConfig.for_board("tiny"), 2)
    out = run_with_stats(prog, x).output
    assert out.max() < 0 and np.array_equal(out, graph.evaluate(x))


def _fixed8_first_layer(cin: int, cout: int, wmax: int, seed: int):
    from rmsmp.arch import numerics
    from rmsmp.compiler.ir import IntGraph, IntLayer

    rng = np.random.default_rng(seed)
    w = rng.integers(-wmax, wmax + 1, size=(cout, cin, 3, 3))
    mult, shift = numerics.requant_multiplier(1 / 300)
    conv = IntLayer(
        "conv1", "conv", w, ["fixed8"] * cout, rng.integers(-(2**20), 2**20, cout),
        np.full(cout, mult), np.full(cout, shift), 0, 127, 1.0, 1.0, (1, 1), (1, 1),
    )  # fmt: skip
    return IntGraph([conv], (cin, 9, 9), 1.0), rng.integers(-128, 128, size=(2, cin, 9, 9))


def test_an_8bit_first_layer_spreads_over_every_row_kind() -> None:
    """pynq-z1 has one Fixed-8 row per tile: Fixed-8 output channels alone would need a tile
    each; spread over cols // 3 lanes per input channel (8 of 24), a weight up to 127 is a sum
    of that many PoT-4 levels (Fixed-4's 8 x 7 falls short), so the PoT-4 rows and the Fixed-8
    row of a tile take one channel each: one channel more than that needs a second tile."""
    cfg = AccelConfig.for_board("pynq-z1")
    rows = {g.fmt: g.rows for g in cfg.groups}
    lanes = cfg.cols // 3
    graph, x = _fixed8_first_layer(3, rows["pot4"] + rows["fixed8"] + 1, 127, 0)
    prog = lower(graph, cfg, 2)
    assert prog.layers[0].out_tiles == 2
    assert prog.input_slots[: 3 * lanes] == [c for c in range(3) for _ in range(lanes)]
    assert np.array_equal(run_with_stats(prog, x).output, graph.evaluate(x))


def test_spread_first_layer_rtl_equals_golden(rtl) -> None:
    graph, x = _fixed8_first_layer(3, 4, 12, 1)
    prog = lower(graph, rtl.config, 2)
    assert prog.layers[0].out_tiles < 4 and len(set(prog.input_slots)) == 4
    hw = run_with_stats(prog, x, device=rtl)
    assert np.array_equal(hw.output, run_with_stats(prog, x).output)
    assert np.array_equal(hw.output, graph.evaluate(x))


def test_batch_reuses_weights_and_runs_any_number_of_images() -> None:
    """Batch 4: each pass loads its weights once for all 4 images (same W bytes as batch 1),
    and 7 images run as two device runs of the batch-4 Program."""
    from rmsmp.arch import isa, layout

    _, x, qmodel, graph = _case(3, (8, 10))
    cfg = AccelConfig.for_board("pynq-z1")

    def w_bytes(prog) -> int:
        words = isa.from_bytes(cfg, prog.segments["insn"].data)
        loads = [isa.decode(cfg, w) for w in words]
        eb = layout.entry_bytes(cfg, layout.Entry.W)
        return sum(
            i.y_size * i.x_size * eb for i in loads if i.op is isa.Opcode.LOAD and i.buf == 0
        )

    one, four = lower(graph, cfg, 1), lower(graph, cfg, 4)
    assert w_bytes(four) == w_bytes(one) > 0
    x7 = torch.cat([x] * 7)[:7]
    res = run_with_stats(four, x7.numpy())
    assert res.output.shape[0] == 7
    _check_run(res, graph, qmodel, x7)


@pytest.fixture(scope="module")
def resnet20():
    """Our committed QAT checkpoint's integer graph and its pynq-z1 Program."""
    from rmsmp.demo import CHECKPOINT
    from rmsmp.quant.frontend import graph_from_file

    graph = graph_from_file(CHECKPOINT, None)
    return graph, lower(graph, AccelConfig.for_board("pynq-z1"), 1)


@pytest.mark.rtl
@pytest.mark.parametrize("backend", ["rtl", "pynq-sim"])
def test_our_resnet20_checkpoint_whole_on_pynq_z1_rtl(resnet20, backend: str) -> None:
    """The committed QAT checkpoint, exported, runs input to logits on the pynq-z1 RTL, bare
    and behind the PYNQ driver: RTL == golden == IntGraph.evaluate on two CIFAR-10 images."""
    from rmsmp.quant.data import cifar10_test

    graph, prog = resnet20
    x, _ = cifar10_test(n=2, seed=7)
    hw = run_with_stats(prog, x, backend=backend)
    gold = run_with_stats(prog, x)
    assert np.array_equal(hw.output, gold.output)
    _check_model(hw, gold)
    assert np.array_equal(hw.output, graph.evaluate(graph.quantize_input(x)))
    assert [s for s, where in hw.placement if where == "host"] == HOST_STEPS
