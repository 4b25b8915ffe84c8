"""Pipeline depths of the core, in cycles: the hardware is built with them and the cycle model
(``rmsmp.sim.cycles``) predicts run times from them, so the two cannot drift apart.

Only what the core's timing depends on and what the instruction fields do not say lives here;
the unit that owns each stage imports its depth from this module.
"""

from __future__ import annotations

CHECK_LATENCY = 4
"""Fetch's ``Checker`` pipeline: products, sums, ranges, window (one register each)."""
MAC_LATENCY = 4
"""``MacArray``: the input register, then a pipelined PE unit (``hw.pe``: after the first tree
level, part way down the tree, and at the output)."""
REQUANT_LATENCY = 5
"""``RequantLane``: one output per cycle, this many cycles after its inputs (its five register
stages: v, partial products, their row sums, the exact sum, the clamped output)."""
STUCK_CYCLES = 4
"""The shell ends a run after fetch and every unit have been unable to progress this long."""
DDR_READ_LATENCY = 20
"""Cycles from a read burst's AR handshake to its first beat in the simulated DDR (the Verilator
harness's default, fixed mode); a write burst's response comes half as long after its last
beat. A board's PS7 DDR controller is slower and varies; the cycle model takes it as an
argument."""
