"""benchmarks/timing.py and resources.py on tiny designs whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import benchpath
import pe_resources
import pytest
import resources
import timing
from amaranth import Elaboratable, Module, Signal
from amaranth.back import verilog
from amaranth.lib.memory import Memory

from rmsmp.arch import weight_format
from rmsmp.hw.generate import to_verilog
from rmsmp.hw.pe import DotRow, PairRow


class And3(Elaboratable):
    """Three registers -> one 3-input AND -> a register: exactly one LUT3 between flip-flops."""

    def __init__(self) -> None:
        self.a, self.b, self.c, self.y = Signal(), Signal(), Signal(), Signal()

    def elaborate(self, platform) -> Module:
        m = Module()
        ra, rb, rc = Signal(), Signal(), Signal()
        m.d.sync += [ra.eq(self.a), rb.eq(self.b), rc.eq(self.c), self.y.eq(ra & rb & rc)]
        return m


class AddChain(Elaboratable):
    """Registered inputs -> ``n`` chained add-xor stages -> a register, or a register per stage.

    The xor keeps Yosys from merging the adds into one multi-operand sum.
    """

    def __init__(self, n: int, width: int, pipelined: bool) -> None:
        self.n, self.width, self.pipelined = n, width, pipelined
        self.x = [Signal(width, name=f"in{i}") for i in range(n + 1)]
        self.y = Signal(width)

    def elaborate(self, platform) -> Module:
        m = Module()
        regs = [Signal(self.width, name=f"x{i}") for i in range(self.n + 1)]
        m.d.sync += [r.eq(x) for r, x in zip(regs, self.x, strict=True)]
        acc = regs[0]
        for i, r in enumerate(regs[1:]):
            s = Signal(self.width, name=f"s{i}")
            if self.pipelined:
                m.d.sync += s.eq((acc + r) ^ r.rotate_left(1))
            else:
                m.d.comb += s.eq((acc + r) ^ r.rotate_left(1))
            acc = s
        m.d.sync += self.y.eq(acc)
        return m


class LutRam(Elaboratable):
    """Address register -> asynchronous read of a 64 x 8 memory -> data register."""

    def __init__(self, init: tuple[int, ...] = ()) -> None:
        self.addr, self.wdata, self.we, self.q = Signal(6), Signal(8), Signal(), Signal(8)
        self.init = init

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=64, init=self.init)
        rd, wr = mem.read_port(domain="comb"), mem.write_port()
        addr = Signal(6)
        m.d.sync += [addr.eq(self.addr), self.q.eq(rd.data)]
        m.d.comb += [rd.addr.eq(addr), wr.addr.eq(self.addr), wr.data.eq(self.wdata)]
        m.d.comb += wr.en.eq(self.we)
        return m


def _time(tmp_path: Path, top: Elaboratable, ports: list[Signal]) -> timing.TimedPath:
    text = verilog.convert(top, name="tiny", ports=ports, emit_src=False)
    synth = timing.synthesize(text, "tiny", tmp_path)
    worst = timing.estimate(json.loads(synth.flat_json.read_text()), 400).worst("reg->reg")
    assert worst is not None
    return worst


def test_parse_specify_reads_arcs_setup_and_clock_to_out() -> None:
    lib = timing.parse_specify(
        """
module LUT2(output O, input I0, I1);
  specify
    (I0 => O) = 238; // comment
    (I1 => O) = 100 + 27 /* two parts */;
  endspecify
endmodule
module FDRE(output Q, input C, CE, D, R);
  specify
    $setup(CE, posedge C &&& !IS_C_INVERTED, 109);
    $setup(R , posedge C, 404);
    if (CE) (posedge C => (Q : D)) = 303;
`ifndef YOSYS
    (posedge R => (Q : 1'b0)) = 999;
`else
    (R => Q) = 764;
`endif
  endspecify
endmodule
"""
    )
    assert lib["LUT2"].arcs == {
        ("I0", None): [(("O", None), 238)],
        ("I1", None): [(("O", None), 127)],
    }
    ff = lib["FDRE"]
    assert ff.setup == {("CE", None): 109, ("R", None): 404}
    assert ff.clk_to_out == {("Q", None): 303}
    assert ff.arcs == {("R", None): [(("Q", None), 764)]}


def test_dsp_timing_follows_its_registers() -> None:
    comb = timing.dsp_timing({k: "0" for k in ("AREG", "BREG", "CREG", "MREG", "PREG")})
    assert comb.clk_to_out == {} and (("P", None), 2823) in comb.arcs[("A", None)]
    a_only = timing.dsp_timing({"AREG": "1", "BREG": "0", "CREG": "0", "MREG": "0", "PREG": "0"})
    assert a_only.setup[("A", None)] == 254 and ("B", None) in a_only.arcs
    assert a_only.clk_to_out[("P", None)] == 2952
    assert timing.dsp_timing({}).clk_to_out[("P", None)] == 329  # primitive defaults: all regs


@benchpath.needs_yosys
def test_one_lut_between_registers_is_timed_exactly(tmp_path: Path) -> None:
    top = And3()
    worst = _time(tmp_path, top, [top.a, top.b, top.c, top.y])
    # FDRE clock-to-Q 303 + net 400 + LUT3 I0 407 + net 400 + FDRE D setup 0.
    assert worst.cells == ["LUT3"]
    assert worst.delay_ps == 303 + 400 + 407 + 400


@benchpath.needs_yosys
def test_pipelined_adder_chain_is_faster(tmp_path: Path) -> None:
    comb, piped = AddChain(4, 16, False), AddChain(4, 16, True)
    t_comb = _time(tmp_path, comb, [*comb.x, comb.y])
    t_piped = _time(tmp_path, piped, [*piped.x, piped.y])
    assert t_comb.summary()["lut_levels"] >= 4  # every stage's adder and xor in one cycle
    assert t_piped.summary()["lut_levels"] <= 2  # one stage
    assert t_piped.delay_ps * 2 < t_comb.delay_ps


@benchpath.needs_yosys
def test_lutram_read_is_timed_from_its_address_and_counted(tmp_path: Path) -> None:
    top = LutRam()
    text = verilog.convert(top, name="tiny", ports=[top.addr, top.wdata, top.we, top.q])
    synth = timing.synthesize(text, "tiny", tmp_path)
    use = resources.utilisation(resources.parse_stat(synth.stat.read_text()))
    assert use["lut_as_memory"] >= 8 and use["lut"] == use["lut_logic"] + use["lut_as_memory"]
    est = timing.estimate(json.loads(synth.flat_json.read_text()), 400)
    worst = est.worst("reg->reg")
    assert worst is not None and worst.start.startswith("FDRE addr")
    assert worst.cells[0].startswith("RAM") and worst.summary()["lut_levels"] >= 1


@pytest.mark.parametrize("init", [(), (0, 3)])
def test_only_all_zero_memory_inits_are_dropped(init: tuple[int, ...]) -> None:
    """A memory's all-zero ``initial`` block goes (it held a zc706 top in Yosys for hours), one
    with any other word stays, and nothing else of the module changes."""
    top = LutRam(init)
    text = verilog.convert(top, name="tiny", ports=[top.addr, top.wdata, top.we, top.q])
    kept = timing.drop_zero_init(text)
    assert ("mem[1] = 8'h03;" in kept) == bool(init)
    assert ("initial begin" in kept) == bool(init)
    assert (kept == text) == bool(init)
    assert kept.count("\n") == text.count("\n") - (0 if init else 66)


@benchpath.needs_yosys
def test_zero_init_dropped_maps_to_the_same_cells(tmp_path: Path) -> None:
    """The module by module synthesis (its zero inits dropped) maps to the cells of one whole
    synth_xilinx run of the design with them."""
    top = LutRam()
    text = verilog.convert(top, name="tiny", ports=[top.addr, top.wdata, top.we, top.q])
    whole = timing.synthesize(text, "tiny", tmp_path / "whole")
    parts = timing.synthesize_modules(text, "tiny", tmp_path / "parts")
    stats = [resources.parse_stat(s.stat.read_text()) for s in (whole, parts)]
    assert stats[0].pop("BUFG") == 1  # the whole run buffers the clock; units use -noclkbuf
    assert stats[0] == stats[1] and stats[1]["RAM64M"] == 3


def test_lut_sites_count_lutram_and_srl() -> None:
    stat = """
=== rmsmp_top ===

   Number of wires:                123
   Number of cells:                 40
     CARRY4                          2
     FDRE                           10
     INV                             1
     LUT2                            5
     LUT6                            3
     RAM32M                          2
     RAM64M                          1
     RAM64X1D                        2
     RAM128X1D                       1
     RAMB18E1                        3
     RAMB36E1                        1
     SRLC32E                         4
"""
    cells = resources.parse_stat(stat)
    assert cells["RAM64X1D"] == 2 and "Number" not in cells
    use = resources.utilisation(cells)
    assert use["lut_logic"] == 1 + 5 + 3
    assert use["lut_as_memory"] == 2 * 4 + 4 + 2 * 2 + 4 + 4
    assert use["lut"] == use["lut_logic"] + use["lut_as_memory"]
    assert use["ff"] == 10 and use["bram36_equiv"] == 2.5 and use["carry4"] == 2
    with pytest.raises(ValueError, match="RAM512X1S"):
        resources.lut_sites({"RAM512X1S": 1})


@benchpath.needs_yosys
def test_fixed4_pair_maps_to_one_dsp_per_column(tmp_path: Path) -> None:
    """Yosys puts a packed Fixed-4 pair's column in one DSP48E1 (the pack in its pre-adder, the
    first tree level in its post-adder); a PoT-4 row takes none."""
    cols = 4
    counts = {}
    for name, dut in (
        ("pair", PairRow(cols, 8, pipelined=True)),
        ("pot4", DotRow(weight_format("pot4"), cols, 8, pipelined=True)),
    ):
        synth = timing.synthesize(to_verilog(dut, name), name, tmp_path)
        counts[name] = resources.parse_stat(synth.stat.read_text())
    assert counts["pair"]["DSP48E1"] == cols
    assert "DSP48E1" not in counts["pot4"]
    assert counts["pot4"]["CARRY4"] > 0


class TwoAnd3(Elaboratable):
    """Two And3 submodules whose outputs meet in one more register."""

    def __init__(self) -> None:
        self.a, self.b = And3(), And3()
        self.y = Signal()

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.a, m.submodules.b = self.a, self.b
        m.d.sync += self.y.eq(self.a.y ^ self.b.y)
        return m


@benchpath.needs_yosys
def test_each_module_counts_only_its_own_cells(tmp_path: Path) -> None:
    top = TwoAnd3()
    ports = [top.y] + [s for sub in (top.a, top.b) for s in (sub.a, sub.b, sub.c)]
    mods = pe_resources.modules(verilog.convert(top, name="top", ports=ports, emit_src=False))
    assert sorted(mods) == ["top", "top.a", "top.b"]
    own = {n: pe_resources.counts(pe_resources.own_cells(mods, n), n, tmp_path) for n in mods}
    assert own["top.a"] == own["top.b"]
    assert (own["top.a"]["ff"], own["top.a"]["lut"]) == (4, 1)  # three inputs and y; the AND
    assert (own["top"]["ff"], own["top"]["lut"]) == (1, 1)  # y; the XOR
