"""AXI4 / AXI4-Lite signatures (master view), and their flat-named form for the top level.

Zynq HP ports are AXI3 (bursts of at most 16 beats, no region/qos); the master uses the AXI4
signal set restricted to what AXI3 allows, so the interconnect passes it through unchanged.
Inside the design the ports are typed interfaces; only the top level flattens them into the
``prefix_member`` names Vivado infers interfaces from (``m_axi_araddr``, ``s_axil_wdata``, ...).
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

AXI_BURST_INCR = 1
AXI_4K = 4096
"""Bursts must not cross a 4 KiB boundary."""
AXI_LEN_BITS = 8
AXI_SIZE_BITS = 3
AXI_BURST_BITS = 2
AXI_RESP_BITS = 2
AXI_RESP_OKAY = 0


def axi_size(data_bits: int) -> int:
    """AxSIZE of full-width beats: log2 of the bytes per beat."""
    return (data_bits // 8).bit_length() - 1


class AxiReadSignature(wiring.Signature):
    """The read half (AR, R) of an AXI4 port, master view."""

    def __init__(self, addr_bits: int, data_bits: int) -> None:
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__(
            {
                "araddr": Out(addr_bits),
                "arlen": Out(AXI_LEN_BITS),
                "arsize": Out(AXI_SIZE_BITS),
                "arburst": Out(AXI_BURST_BITS),
                "arvalid": Out(1),
                "arready": In(1),
                "rdata": In(data_bits),
                "rresp": In(AXI_RESP_BITS),
                "rlast": In(1),
                "rvalid": In(1),
                "rready": Out(1),
            }
        )


class AxiWriteSignature(wiring.Signature):
    """The write half (AW, W, B) of an AXI4 port, master view."""

    def __init__(self, addr_bits: int, data_bits: int) -> None:
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__(
            {
                "awaddr": Out(addr_bits),
                "awlen": Out(AXI_LEN_BITS),
                "awsize": Out(AXI_SIZE_BITS),
                "awburst": Out(AXI_BURST_BITS),
                "awvalid": Out(1),
                "awready": In(1),
                "wdata": Out(data_bits),
                "wstrb": Out(data_bits // 8),
                "wlast": Out(1),
                "wvalid": Out(1),
                "wready": In(1),
                "bresp": In(AXI_RESP_BITS),
                "bvalid": In(1),
                "bready": Out(1),
            }
        )


class AxiLiteSignature(wiring.Signature):
    """An AXI4-Lite port, master view (a register block takes ``.flip()``)."""

    def __init__(self, addr_bits: int, data_bits: int = 32) -> None:
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__(
            {
                "awaddr": Out(addr_bits),
                "awvalid": Out(1),
                "awready": In(1),
                "wdata": Out(data_bits),
                "wstrb": Out(data_bits // 8),
                "wvalid": Out(1),
                "wready": In(1),
                "bresp": In(AXI_RESP_BITS),
                "bvalid": In(1),
                "bready": Out(1),
                "araddr": Out(addr_bits),
                "arvalid": Out(1),
                "arready": In(1),
                "rdata": In(data_bits),
                "rresp": In(AXI_RESP_BITS),
                "rvalid": In(1),
                "rready": Out(1),
            }
        )


def flat_members(prefix: str, sig: wiring.Signature) -> dict[str, wiring.Member]:
    """The members of ``sig`` as flat ``prefix_name`` ports (flows kept, flipped if ``sig`` is)."""
    return {f"{prefix}_{'_'.join(map(str, path))}": mem for path, mem in sig.members.flatten()}


def connect_flat(m: Module, owner: object, prefix: str, iface: object) -> None:
    """Wire the flat ports ``prefix_*`` of ``owner`` (the top) to the interface ``iface``.

    ``owner``'s flat members must have been built by ``flat_members(prefix, iface.signature)``:
    each flows the same way as the interface member it stands for.
    """
    for path, mem in iface.signature.members.flatten():
        flat = getattr(owner, f"{prefix}_{'_'.join(map(str, path))}")
        inner = iface
        for p in path:
            inner = getattr(inner, p)
        if mem.flow == Out:
            m.d.comb += flat.eq(inner)
        else:
            m.d.comb += inner.eq(flat)


def axil_slave(prefix: str, addr_bits: int, data_bits: int = 32) -> dict[str, wiring.Member]:
    """Flat members of an AXI4-Lite slave port (the register block's view)."""
    return flat_members(prefix, AxiLiteSignature(addr_bits, data_bits).flip())
