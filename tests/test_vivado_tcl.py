"""The Vivado flow without Vivado: the generated Tcl runs through tclsh with a stub for every
Vivado command and property it uses (anything else fails), and what it does is checked against
the board data; the constraints, the wrapper and the overlay package are checked as text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from graphgen import random_graph

from rmsmp.arch import AccelConfig, regs
from rmsmp.boards import BOARDS, board
from rmsmp.boards.vivado import TCL_NAME, write_project
from rmsmp.boards.wrapper import WRAPPER_NAME, ports
from rmsmp.cli import main
from rmsmp.compiler.lower import lower
from rmsmp.hw import generate
from rmsmp.sim.pynq_sim import open_sim

TCLSH = shutil.which("tclsh")
needs_tclsh = pytest.mark.skipif(TCLSH is None, reason="needs tclsh (apt-get install tcl)")

PS7_PROPERTIES = {
    "PCW_CRYSTAL_PERIPHERAL_FREQMHZ",
    "PCW_UIPARAM_DDR_PARTNO",
    "PCW_UIPARAM_DDR_BUS_WIDTH",
    "PCW_UIPARAM_DDR_FREQ_MHZ",
    "PCW_FPGA0_PERIPHERAL_FREQMHZ",
    "PCW_EN_CLK0_PORT",
    "PCW_EN_RST0_PORT",
    "PCW_USE_M_AXI_GP0",
    "PCW_USE_S_AXI_HP0",
    "PCW_S_AXI_HP0_DATA_WIDTH",
    "PCW_USE_FABRIC_INTERRUPT",
    "PCW_IRQ_F2P_INTR",
}
"""processing_system7 properties (Xilinx PG082 / the IP's CONFIG names) the stub accepts."""
IPS = {
    "processing_system7": (
        {"M_AXI_GP0", "S_AXI_HP0", "DDR", "FIXED_IO"},
        {"FCLK_CLK0", "FCLK_RESET0_N", "M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK", "IRQ_F2P"},
        PS7_PROPERTIES,
    ),
    "smartconnect": ({"S00_AXI", "M00_AXI"}, {"aclk", "aresetn"}, {"NUM_SI", "NUM_MI"}),
    "proc_sys_reset": (
        set(),
        {"slowest_sync_clk", "ext_reset_in", "peripheral_aresetn", "interconnect_aresetn"},
        set(),
    ),
}
"""Each IP the stub knows: (interface pins, pins, CONFIG properties)."""

STUBS = r"""
set ::log [open $::env(RMSMP_TCL_LOG) w]
proc log {args} { puts $::log [join $args "\t"] }
rename unknown _tcl_unknown
proc unknown {args} { error "not a Vivado command: [lindex $args 0]" }
proc need {cond what} { if {![uplevel 1 [list expr $cond]]} { error "stub: $what" } }
proc opts {spec argv} {
    # parse -flag value / -flag options into the caller's opt() array; returns the rest
    upvar 1 opt opt
    set rest {}
    for {set i 0} {$i < [llength $argv]} {incr i} {
        set a [lindex $argv $i]
        if {[dict exists $spec $a]} {
            if {[dict get $spec $a]} { set opt($a) [lindex $argv [incr i]] } else { set opt($a) 1 }
        } elseif {[string index $a 0] eq "-"} { error "stub: unknown option $a" } else {
            lappend rest $a
        }
    }
    return $rest
}
proc create_project {args} {
    set r [opts {-force 0 -part 1} $args]
    need {[llength $r] == 2} "create_project NAME DIR"
    log create_project {*}$r $opt(-part)
}
proc current_project {} { return project }
proc current_fileset {} { return sources_1 }
proc get_board_parts {args} {
    set r [opts {-quiet 0} $args]
    if {[lindex $r 0] in $::installed_board_parts} { return [lindex $r 0] }
    return {}
}
proc add_files {args} {
    set r [opts {-norecurse 0 -fileset 1} $args]
    foreach f [concat {*}$r] { need {[file exists $f]} "add_files: no file $f" }
    log add_files {*}[concat {*}$r]
}
proc update_compile_order {args} { opts {-fileset 1} $args }
proc create_bd_design {name} { log create_bd_design $name }
proc get_ipdefs {args} {
    opts {-all 0 -filter 1} $args
    need {[regexp {^NAME == (\w+)$} $opt(-filter) -> name]} "get_ipdefs -filter"
    if {![dict exists $::ips $name]} { return {} }
    return [list xilinx.com:ip:$name:5.5 xilinx.com:ip:$name:5.10]
}
proc create_bd_cell {args} {
    set r [opts {-type 1 -vlnv 1 -reference 1} $args]
    set name [lindex $r 0]
    if {$opt(-type) eq "module"} {
        need {$opt(-reference) eq $::module} "module reference $opt(-reference)"
        set ::cells($name) module
    } else {
        set ::cells($name) [lindex [split $opt(-vlnv) :] 2]
        log vlnv $name $opt(-vlnv)
    }
    return $name
}
proc cell_of {obj} {
    need {[info exists ::cells($obj)]} "no cell $obj"
    return $::cells($obj)
}
proc get_bd_intf_pins {path} {
    lassign [split $path /] cell pin
    need {$pin in [lindex [dict get $::ips [cell_of $cell]] 0]} "no interface pin $path"
    return $path
}
proc get_bd_pins {path} {
    lassign [split $path /] cell pin
    need {$pin in [lindex [dict get $::ips [cell_of $cell]] 1]} "no pin $path"
    return $path
}
proc connect_bd_intf_net {a b} { log intf_net $a $b }
proc connect_bd_net {args} {
    need {[llength $args] >= 2} "connect_bd_net needs 2 pins"
    log net {*}$args
}
proc apply_bd_automation {args} {
    set r [opts {-rule 1 -config 1} $args]
    need {$opt(-rule) eq "xilinx.com:bd_rule:processing_system7"} "rule $opt(-rule)"
    need {[dict keys $opt(-config)] eq {make_external apply_board_preset Master Slave}} "config"
    need {[cell_of $r] eq "processing_system7"} "automation on $r"
    log automation $r [dict get $opt(-config) apply_board_preset]
}
proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        lassign $args - props obj
    } else {
        lassign $args name value obj
        set props [list $name $value]
    }
    foreach {k v} $props {
        if {[string match CONFIG.* $k]} {
            set allowed [lindex [dict get $::ips [cell_of $obj]] 2]
            need {[string range $k 7 end] in $allowed} "unknown property $k on $obj"
        } else {
            set known {board_part project top sources_1}
            need {[dict exists $known $k] && [dict get $known $k] eq $obj} "bad property $k on $obj"
        }
        log property $obj $k $v
    }
}
proc get_bd_addr_spaces {path} {
    need {$path in {ps7/Data rmsmp_0/m_axi}} "no address space $path"; return $path
}
proc get_bd_addr_segs {path} {
    need {$path in {rmsmp_0/s_axi/reg0 ps7/S_AXI_HP0/HP0_DDR_LOWOCM}} "no segment $path"
    return $path
}
proc assign_bd_address {args} {
    set r [opts {-offset 1 -range 1 -target_address_space 1} $args]
    log address $opt(-target_address_space) {*}$r $opt(-offset) $opt(-range)
}
proc validate_bd_design {} { log validate }
proc save_bd_design {} {}
proc get_files {name} { need {$name eq "rmsmp.bd"} "get_files $name"; return $name }
proc generate_target {what bd} {}
proc make_wrapper {args} {
    opts {-files 1 -top 0} $args
    set f [file join $::env(RMSMP_STUB_DIR) rmsmp_wrapper.v]
    close [open $f w]
    return $f
}
proc launch_runs {args} { log launch_runs {*}$args }
proc wait_on_run {run} {}
proc get_runs {run} { need {$run eq "impl_1"} "run $run"; return $run }
proc get_property {name obj} {
    return [dict get [list PROGRESS 100% STATS.WNS 0.25 DIRECTORY $::env(RMSMP_STUB_DIR)] $name]
}
"""


def _prelude(cfg: AccelConfig, installed: list[str]) -> str:
    ips = {k: list(v) for k, v in IPS.items()}
    names = [p[0] for p in ports(cfg)]
    buses = sorted({n.split("_axi_")[0] + "_axi" for n in names if "_axi_" in n})
    ips["module"] = (buses, [n for n in names if "_axi_" not in n], [])

    def tcl_list(items) -> str:
        return "{" + " ".join(sorted(items)) + "}"

    spec = " ".join(f"{k} {{{' '.join(tcl_list(x) for x in v)}}}" for k, v in ips.items())
    return (
        f"set ::ips [dict create {spec}]\n"
        f"set ::module {WRAPPER_NAME}\n"
        f"set ::installed_board_parts {{{' '.join(installed)}}}\n" + STUBS
    )


def run_tcl(
    out: Path, cfg: AccelConfig, installed: list[str], handoff: str = "rmsmp.gen"
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Source ``out/build.tcl`` after the stubs; return tclsh's result and the call log."""
    stub = out / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "rmsmp_wrapper.bit").write_bytes(b"bit")
    hwh = out / "vivado" / handoff / "sources_1" / "bd" / "rmsmp" / "hw_handoff"
    hwh.mkdir(parents=True, exist_ok=True)
    (hwh / "rmsmp.hwh").write_text("<hwh/>")
    script = out / "check.tcl"
    script.write_text(_prelude(cfg, installed) + f"\nsource {out / TCL_NAME}\nclose $::log\n")
    env = {"RMSMP_TCL_LOG": str(out / "calls.log"), "RMSMP_STUB_DIR": str(stub), "PATH": "/usr/bin"}
    proc = subprocess.run([TCLSH, str(script)], capture_output=True, text=True, env=env)
    log = [line.split("\t") for line in (out / "calls.log").read_text().splitlines()]
    return proc, log


@pytest.fixture(scope="module", params=sorted(BOARDS))
def project(request, tmp_path_factory):
    """``rmsmp build --board B`` for every board, with the core's Verilog stubbed (elaborating
    the board-sized core takes minutes; test_generate covers it, the Tcl does not read it)."""
    b = board(request.param)
    out = tmp_path_factory.mktemp(b.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generate, "verilog_text", lambda cfg: f"// RMSMP_CONFIG_HASH {cfg.hash}\n")
        assert main(["build", "--board", b.name, "-o", str(out)]) == 0
    return b, out


@needs_tclsh
@pytest.mark.parametrize("preset", [False, True])
def test_tcl_builds_the_block_design_from_the_board_data(project, preset: bool) -> None:
    b, out = project
    cfg = b.config
    proc, log = run_tcl(out, cfg, [b.board_part] if preset else [])
    assert proc.returncode == 0, proc.stderr
    calls = {}
    for entry in log:
        calls.setdefault(entry[0], []).append(entry[1:])
    assert calls["create_project"] == [["rmsmp", str(out / "vivado"), b.part]]
    assert ["project", "board_part", b.board_part] in calls.get("property", []) or not preset
    assert calls["automation"] == [["ps7", "1" if preset else "0"]]
    ps7 = {k.removeprefix("CONFIG."): v for obj, k, v in calls["property"] if obj == "ps7"}
    assert ps7 == {
        "PCW_CRYSTAL_PERIPHERAL_FREQMHZ": f"{b.ps7.crystal_mhz:.6f}".rstrip("0").rstrip("."),
        "PCW_UIPARAM_DDR_PARTNO": b.ps7.ddr_part,
        "PCW_UIPARAM_DDR_BUS_WIDTH": f"{b.ps7.ddr_bus_bits} Bit",
        "PCW_UIPARAM_DDR_FREQ_MHZ": f"{b.ps7.ddr_mhz:.6f}".rstrip("0").rstrip("."),
        "PCW_FPGA0_PERIPHERAL_FREQMHZ": f"{cfg.clock_mhz:g}",
        "PCW_EN_CLK0_PORT": "1",
        "PCW_EN_RST0_PORT": "1",
        "PCW_USE_M_AXI_GP0": "1",
        "PCW_USE_S_AXI_HP0": "1",
        "PCW_S_AXI_HP0_DATA_WIDTH": "64",
        "PCW_USE_FABRIC_INTERRUPT": "1",
        "PCW_IRQ_F2P_INTR": "1",
    }
    assert {v[1] for v in calls["vlnv"]} == {
        f"xilinx.com:ip:{ip}:5.10"
        for ip in ("processing_system7", "proc_sys_reset", "smartconnect")
    }
    assert sorted(calls["address"]) == sorted(
        [
            ["ps7/Data", "rmsmp_0/s_axi/reg0", f"{b.csr_base:#010x}", f"{b.csr_range >> 10}K"],
            [
                "rmsmp_0/m_axi",
                "ps7/S_AXI_HP0/HP0_DDR_LOWOCM",
                "0x00000000",
                f"{b.ddr_bytes >> 20}M" if b.ddr_bytes < 1 << 30 else f"{b.ddr_bytes >> 30}G",
            ],
        ]
    )
    wired = {p for net in calls["net"] + calls["intf_net"] for p in net}
    assert {f"rmsmp_0/{n}" for n in ("aclk", "aresetn", "irq", "s_axi", "m_axi")} <= wired
    assert ["ps7/M_AXI_GP0", "ctrl_sc/S00_AXI"] in calls["intf_net"]
    assert ["mem_sc/M00_AXI", "ps7/S_AXI_HP0"] in calls["intf_net"]
    assert (out / "overlay" / "rmsmp.bit").read_bytes() == b"bit"
    assert (out / "overlay" / "rmsmp.hwh").read_text() == "<hwh/>"


@needs_tclsh
def test_older_vivado_hwh_location_is_found(project) -> None:
    b, out = project
    shutil.rmtree(out / "vivado", ignore_errors=True)
    proc, _ = run_tcl(out, b.config, [], handoff="rmsmp.srcs")
    assert proc.returncode == 0, proc.stderr


@needs_tclsh
@pytest.mark.parametrize(
    ("good", "bad", "needle"),
    [
        ("PCW_USE_S_AXI_HP0 ", "PCW_USE_S_AXI_HPO ", "unknown property"),
        ("connect_bd_net [get_bd_pins rst_0", "conect_bd_net [get_bd_pins rst_0", "not a Vivado"),
        ("rmsmp_0/aresetn]", "rmsmp_0/rst]", "no pin"),
        ("-reference rmsmp_axi", "-reference rmsmp_top", "module reference"),
    ],
)
def test_typos_fail_the_stub_run(project, good: str, bad: str, needle: str) -> None:
    b, out = project
    tcl = out / TCL_NAME
    text = tcl.read_text()
    assert good in text
    tcl.write_text(text.replace(good, bad, 1))
    try:
        proc, _ = run_tcl(out, b.config, [])
    finally:
        tcl.write_text(text)
    assert proc.returncode != 0 and needle in proc.stderr


def test_xdc_has_no_pins_and_names_the_board(project) -> None:
    b, out = project
    text = (out / "rmsmp.xdc").read_text()
    assert f"RMSMP_CONFIG_HASH {b.config.hash}" in text and b.part in text
    assert "get_ports" not in text and "PACKAGE_PIN" not in text
    assert "set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]" in text


def test_wrapper_follows_vivado_conventions(project) -> None:
    b, out = project
    text = (out / f"{WRAPPER_NAME}.v").read_text()
    names = [p[0] for p in ports(b.config)]
    assert {"aclk", "aresetn", "irq"} <= set(names)
    assert all(
        n.startswith(("s_axi_", "m_axi_")) for n in names if n not in ("aclk", "aresetn", "irq")
    )
    assert ".rst(~aresetn)" in text and ".clk(aclk)" in text
    assert 'X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW"' in text
    for n in names:
        assert re.search(
            rf"X_INTERFACE_INFO = \"[^\"]+\" \*\)\n(  \(\*.*\n)?  \w+ wire (\[\d+:0\] )?{n}\b", text
        ), n


def test_wrapper_and_core_lint_clean(tmp_path) -> None:
    """Verilator elaborates the wrapper around the core with no port mismatch or warning."""
    from rmsmp.boards.wrapper import wrapper_verilog
    from rmsmp.hw.generate import verilog_text
    from rmsmp.sim.verilator import lint

    cfg = AccelConfig.preset("tiny")
    src = tmp_path / f"{WRAPPER_NAME}.v"
    src.write_text(wrapper_verilog(cfg) + verilog_text(cfg))
    lint(src)


def test_one_hash_in_verilog_csrs_program_and_package(tmp_path, capsys) -> None:
    """For a build from the tiny config: the Verilog headers, the Tcl, the XDC, the overlay's
    manifest and Program, and the CONFIG_HASH registers read through the driver all agree;
    the package's script runs the Program on the simulated board."""
    cfg = AccelConfig.preset("tiny")
    rng = np.random.default_rng(4)
    specs = [dict(kind="conv", n=8, kernel=3, padding=1), dict(kind="linear", n=10, flatten=True)]
    graph = random_graph(rng, cfg, (3, 4, 4), specs)
    program = lower(graph, cfg, batch=2)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    program.save(tmp_path / "m.rmsmp")
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(3, 3, 4, 4)).astype(np.int16)
    labels = graph.evaluate(x.astype(np.int64)).argmax(axis=1)
    np.savez(tmp_path / "s.npz", x=x, labels=labels)
    out = tmp_path / "build"
    argv = ["build", "--board", "pynq-z2", "--config", str(tmp_path / "cfg.json"), "-o", str(out)]
    assert (
        main([*argv, "--program", str(tmp_path / "m.rmsmp"), "--samples", str(tmp_path / "s.npz")])
        == 0
    )
    stamp = f"RMSMP_CONFIG_HASH {cfg.hash}"
    for name in ("rmsmp_top.v", f"{WRAPPER_NAME}.v", TCL_NAME, "rmsmp.xdc"):
        assert stamp in (out / name).read_text(), name
    manifest = json.loads((out / "overlay" / "manifest.json").read_text())
    assert manifest["config_hash"] == cfg.hash and manifest["board"] == "pynq-z2"
    assert AccelConfig.from_dict(manifest["config"]).hash == cfg.hash
    dev = open_sim(cfg, program.window_size)
    try:
        got = (dev.read_reg("CONFIG_HASH_HI") << 32) | dev.read_reg("CONFIG_HASH_LO")
        assert got == cfg.hash_int and dev.read_reg("MAGIC") == regs.MAGIC
    finally:
        dev.close()
    capsys.readouterr()
    from rmsmp.boards.run_on_board import main as run_package

    assert run_package(["--dir", str(out / "overlay"), "--backend", "pynq-sim"]) == 0
    text = capsys.readouterr().out
    assert f"config {cfg.hash}, 3 images" in text and "top-1: 100.0% (3/3)" in text


def test_build_refuses_a_program_for_other_hardware(tmp_path, capsys) -> None:
    cfg = AccelConfig.preset("tiny")
    graph = random_graph(np.random.default_rng(0), cfg, (6,), [dict(kind="linear", n=5)])
    lower(graph, cfg, 1).save(tmp_path / "m.rmsmp")
    np.savez(tmp_path / "s.npz", x=np.zeros((1, 6), np.int8))
    argv = ["build", "--board", "pynq-z1", "-o", str(tmp_path / "b"), "--program"]
    rc = main([*argv, str(tmp_path / "m.rmsmp"), "--samples", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and cfg.hash in err and "compile the model for the board's config" in err


@pytest.mark.vivado
@pytest.mark.skipif(shutil.which("vivado") is None, reason="needs Vivado on PATH")
def test_vivado_builds_the_overlay(tmp_path) -> None:
    """The whole flow on a machine with Vivado: bitstream and hardware handoff for pynq-z1."""
    out = tmp_path / "pynq-z1"
    write_project(board("pynq-z1"), board("pynq-z1").config, out)
    from rmsmp.boards.vivado import run_vivado

    overlay = run_vivado(out)
    assert (overlay / "rmsmp.bit").stat().st_size > 0
    assert "rmsmp_0" in (overlay / "rmsmp.hwh").read_text()
