"""AXI4 / AXI4-Lite port members, flat-named the way Vivado infers interfaces (prefix_awaddr, ...).

Zynq HP ports are AXI3 (bursts of at most 16 beats, no region/qos); the master uses the AXI4
signal set restricted to what AXI3 allows, so the interconnect passes it through unchanged.
"""

from __future__ import annotations

from amaranth.lib.wiring import In, Out

AXI_SIZE_64 = 3
"""AxSIZE for 8-byte beats."""
AXI_BURST_INCR = 1
AXI_4K = 4096
"""Bursts must not cross a 4 KiB boundary."""


def axil_slave(prefix: str, addr_bits: int, data_bits: int = 32) -> dict:
    """Members of an AXI4-Lite slave port (the device side)."""
    return {
        f"{prefix}_awaddr": In(addr_bits),
        f"{prefix}_awvalid": In(1),
        f"{prefix}_awready": Out(1),
        f"{prefix}_wdata": In(data_bits),
        f"{prefix}_wstrb": In(data_bits // 8),
        f"{prefix}_wvalid": In(1),
        f"{prefix}_wready": Out(1),
        f"{prefix}_bresp": Out(2),
        f"{prefix}_bvalid": Out(1),
        f"{prefix}_bready": In(1),
        f"{prefix}_araddr": In(addr_bits),
        f"{prefix}_arvalid": In(1),
        f"{prefix}_arready": Out(1),
        f"{prefix}_rdata": Out(data_bits),
        f"{prefix}_rresp": Out(2),
        f"{prefix}_rvalid": Out(1),
        f"{prefix}_rready": In(1),
    }


def axi_read_master(prefix: str, addr_bits: int, data_bits: int) -> dict:
    """Members of the read half (AR, R) of an AXI4 master port."""
    return {
        f"{prefix}_araddr": Out(addr_bits),
        f"{prefix}_arlen": Out(8),
        f"{prefix}_arsize": Out(3),
        f"{prefix}_arburst": Out(2),
        f"{prefix}_arvalid": Out(1),
        f"{prefix}_arready": In(1),
        f"{prefix}_rdata": In(data_bits),
        f"{prefix}_rresp": In(2),
        f"{prefix}_rlast": In(1),
        f"{prefix}_rvalid": In(1),
        f"{prefix}_rready": Out(1),
    }


def axi_write_master(prefix: str, addr_bits: int, data_bits: int) -> dict:
    """Members of the write half (AW, W, B) of an AXI4 master port."""
    return {
        f"{prefix}_awaddr": Out(addr_bits),
        f"{prefix}_awlen": Out(8),
        f"{prefix}_awsize": Out(3),
        f"{prefix}_awburst": Out(2),
        f"{prefix}_awvalid": Out(1),
        f"{prefix}_awready": In(1),
        f"{prefix}_wdata": Out(data_bits),
        f"{prefix}_wstrb": Out(data_bits // 8),
        f"{prefix}_wlast": Out(1),
        f"{prefix}_wvalid": Out(1),
        f"{prefix}_wready": In(1),
        f"{prefix}_bresp": In(2),
        f"{prefix}_bvalid": In(1),
        f"{prefix}_bready": Out(1),
    }
