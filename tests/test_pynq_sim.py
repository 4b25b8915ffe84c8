"""The board driver (host.pynq_driver) on the simulated PYNQ board (sim.pynq_sim): what the
board would see, the timeout path and the error-status paths."""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import random_graph

from rmsmp.arch import AccelConfig, regs
from rmsmp.boards import board
from rmsmp.cli import main
from rmsmp.compiler.lower import lower
from rmsmp.host.errors import AcceleratorError
from rmsmp.host.pynq_driver import IP_NAME
from rmsmp.host.runtime import run_with_stats
from rmsmp.sim.pynq_sim import SimBuffer, open_sim

TINY = AccelConfig.preset("tiny")


@pytest.fixture(scope="module")
def chain():
    rng = np.random.default_rng(11)
    specs = [dict(kind="conv", n=9, kernel=3, stride=1, padding=1)] * 2
    graph = random_graph(rng, TINY, (4, 6, 6), specs)
    program = lower(graph, TINY, batch=1)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(1, 4, 6, 6)).astype(np.int16)
    return graph, program, x


@pytest.fixture
def dev(chain):
    d = open_sim(TINY, chain[1].window_size)
    yield d
    d.close()
    d.api.close()


def test_window_and_registers_as_the_board_sees_them(chain, dev) -> None:
    """The window is the allocated buffer's burst-aligned physical address, WINDOW_BASE and
    WINDOW_LIMIT hold it after a run, and the registers sit where the block design puts them."""
    graph, program, x = chain
    res = run_with_stats(program, x, device=dev)
    assert np.array_equal(res.output, graph.evaluate(x.astype(np.int64)))
    assert dev.window_base % TINY.window_align == 0
    assert dev.read_reg("WINDOW_BASE") == dev.window_base
    assert dev.read_reg("WINDOW_LIMIT") == dev.window_base + program.window_size
    b = board("pynq-z1")
    assert dev.overlay.ip_dict[IP_NAME]["phys_addr"] == b.csr_base
    assert (dev.mmio.base_addr, dev.mmio.length) == (b.csr_base, b.csr_range)
    assert res.total_cycles > 0 and dev.read_reg("MAGIC") == regs.MAGIC


@pytest.mark.parametrize("skip", ["flush", "invalidate"])
def test_cache_maintenance_is_what_makes_it_right(chain, dev, monkeypatch, skip) -> None:
    """Without the flush the accelerator reads stale DDR; without the invalidate the host reads
    its stale copy: either way the output is wrong, so the driver's calls are exercised."""
    graph, program, x = chain
    monkeypatch.setattr(SimBuffer, skip, lambda self: None)
    try:
        out = run_with_stats(program, x, device=dev).output
    except AcceleratorError:  # stale instructions may not decode
        return
    assert not np.array_equal(out, graph.evaluate(x.astype(np.int64)))


def test_stopped_clock_times_out_within_the_timeout(chain, dev) -> None:
    """The PL clock stops: the poll gives up once the timeout has passed, with one line."""
    _, program, x = chain
    dev.api.stop_clock()
    clock = dev.api.clock
    start = clock.monotonic()
    with pytest.raises(TimeoutError) as e:
        run_with_stats(program, x, device=dev, timeout_cycles=50_000)
    waited = clock.monotonic() - start
    assert 50_000 / 100e6 <= waited <= 50_000 / 100e6 + 2e-4
    assert "did not finish within 50000 cycles on 'pynq-sim'" in str(e.value)
    assert "\n" not in str(e.value)


def test_long_run_with_a_short_timeout_times_out(chain, dev) -> None:
    _, program, x = chain
    with pytest.raises(TimeoutError, match="did not finish within 100 cycles"):
        run_with_stats(program, x, device=dev, timeout_cycles=100)


def test_stalled_hp_port_ends_with_axi_timeout(chain, dev) -> None:
    """DDR stops answering: the accelerator's watchdog ends the run with an error status."""
    _, program, x = chain
    dev.api.stall_ddr()
    with pytest.raises(AcceleratorError) as e:
        run_with_stats(program, x, device=dev)
    assert e.value.code == "AXI_TIMEOUT" and "HP port" in str(e.value)


def test_slverr_on_a_read_burst_is_axi_resp(chain, dev) -> None:
    _, program, x = chain
    dev.api.inject_error("read", 3)
    with pytest.raises(AcceleratorError) as e:
        run_with_stats(program, x, device=dev)
    assert e.value.code == "AXI_RESP"


def test_mmio_outside_the_registers_is_refused(dev) -> None:
    base = board("pynq-z1").csr_base
    with pytest.raises(ValueError, match="outside the accelerator's registers"):
        dev.api.MMIO(base - 4, 8)
    with pytest.raises(ValueError, match="is outside"):
        dev.mmio.read(board("pynq-z1").csr_range)


def test_cli_runs_on_pynq_sim_and_times_out_in_one_line(chain, tmp_path, capsys) -> None:
    graph, program, x = chain
    program.save(tmp_path / "m.rmsmp")
    np.save(tmp_path / "x.npy", x)
    base = ["run", str(tmp_path / "m.rmsmp"), "--backend", "pynq-sim", "--input"]
    assert main([*base, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y")]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy"), graph.evaluate(x.astype(np.int64)))
    assert "cycles:" in capsys.readouterr().out
    rc = main([*base, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y"), "--timeout-cycles", "9"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "did not finish within 9 cycles" in err
