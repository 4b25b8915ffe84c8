"""Dependency tokens for a program: from what each instruction reads and writes to the push/pop
flags of ``arch.isa``, with a SYNC wherever a load and a store must be ordered.

Every instruction lists the on-chip buffer ranges and DDR ranges it reads and writes. Two
instructions of different units that touch an overlapping range, one of them writing, are a
hazard: the later one must wait for the earlier one. Neighbouring units (load-compute,
compute-store) wait through a token; a load and a store wait through a SYNC that the compute unit
runs between them. Tokens are counted, so a consumer pops one token whenever the newest producer
instruction it must wait for moves forward, and that producer instruction pushes it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..arch.isa import UNIT_OF, Opcode, Unit

Range = tuple[str, int, int]
"""(space, first, one past last): a buffer ("W", "X", "Q", "ACC", "OUT") or a DDR region."""

Access = tuple[str, int, int, bool]
"""A range and whether it is written."""

_ORDER = (Unit.LOAD, Unit.COMPUTE, Unit.STORE)


@dataclass
class Op:
    """One instruction before encoding: its fields, what it touches, and its token flags."""

    op: Opcode
    args: dict[str, int]
    reads: tuple[Range, ...] = ()
    writes: tuple[Range, ...] = ()
    region: str | None = None
    """DDR region its ``dram`` field is relative to (resolved when the window is laid out)."""
    offset: int = 0
    """Byte offset inside ``region``."""
    flags: dict[str, int] = field(default_factory=dict)

    @property
    def unit(self) -> Unit:
        """The unit that runs it."""
        return UNIT_OF[self.op]


class _Tracker:
    """Who touched which range last, per space sorted by range start (so a lookup bisects to
    the entries that can overlap), pruned of entries a later access covers."""

    def __init__(self) -> None:
        self.starts: dict[str, list[int]] = {}
        self.entries: dict[str, list[tuple[int, int, int, bool, Unit]]] = {}
        self.longest: dict[str, int] = {}

    def _near(self, space: str, lo: int, hi: int) -> tuple[int, int]:
        """Index span of the entries of ``space`` that start in [lo - longest, hi)."""
        starts = self.starts.get(space, [])
        a = bisect.bisect_left(starts, lo - self.longest.get(space, 0))
        return a, bisect.bisect_left(starts, hi)

    def conflicts(self, accesses: list[Access]) -> set[int]:
        out = set()
        for space, lo, hi, write in accesses:
            a, b = self._near(space, lo, hi)
            for e0, e1, idx, w, _ in self.entries.get(space, [])[a:b]:
                if e0 < hi and lo < e1 and (w or write):
                    out.add(idx)
        return out

    def record(self, accesses: list[Access], unit: Unit, idx: int) -> None:
        for space, lo, hi, write in accesses:
            starts = self.starts.setdefault(space, [])
            entries = self.entries.setdefault(space, [])
            a, b = bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi)
            keep = [
                e
                for e in entries[a:b]
                if not (e[1] <= hi and (write or (not e[3] and e[4] == unit)))
            ]
            entries[a:b], starts[a:b] = keep, [e[0] for e in keep]
            at = bisect.bisect_right(starts, lo)
            entries.insert(at, (lo, hi, idx, write, unit))
            starts.insert(at, lo)
            self.longest[space] = max(self.longest.get(space, 0), hi - lo)


def _accesses(op: Op) -> list[Access]:
    """``op``'s reads, then writes, as (space, first, one past last, write), touching ranges of
    one space merged: the same bytes in fewer lookups (a GEMM reads its X rows piece by piece)."""
    out: list[Access] = []
    for acc, write in ((op.reads, False), (op.writes, True)):
        for space, lo, hi in sorted(acc):
            last = out[-1] if out else None
            if last and last[3] == write and last[0] == space and lo <= last[2]:
                out[-1] = (space, last[1], max(last[2], hi), write)
            else:
                out.append((space, lo, hi, write))
    return out


def hoist_loads(ops: list[Op], ahead: int | None = None) -> list[Op]:
    """The program with every LOAD moved up to just after the last instruction it conflicts
    with (loads keep their order among themselves), so a pass's first loads overlap the
    previous pass's compute instead of waiting for the program to reach them. Moving a load
    past instructions it does not conflict with keeps every dependency.

    With ``ahead``, at most that many loads are ahead of their own place at any point of the
    program: each may hold a token the compute unit cannot take before fetch reaches its
    reader, and a long run of them fills the token counter and the load queue (a deadlock)."""
    tracker = _Tracker()
    keys: list[float] = []
    last_load = -1.0
    loads: list[int] = []
    for i, op in enumerate(ops):
        key = float(i)
        acc = _accesses(op)
        if op.op is Opcode.LOAD:
            key = max(max(tracker.conflicts(acc), default=-1) + 0.5, last_load)
            if ahead is not None and len(loads) >= ahead:
                key = max(key, loads[-ahead] + 0.5)
            loads.append(i)
            last_load = key
        tracker.record(acc, op.unit, i)
        keys.append(key)
    order = sorted(range(len(ops)), key=lambda i: (keys[i], i))
    return [ops[i] for i in order]


def add_tokens(ops: list[Op]) -> list[Op]:
    """The program with SYNCs inserted and every instruction's token flags set."""
    out: list[Op] = []
    deps: list[set[int]] = []
    tracker = _Tracker()
    for op in ops:
        near, far = set(), set()
        acc = _accesses(op)
        for j in tracker.conflicts(acc):
            u = out[j].unit
            if u is not op.unit:
                (far if abs(_ORDER.index(u) - _ORDER.index(op.unit)) == 2 else near).add(j)
        if far:
            out.append(Op(Opcode.SYNC, {}))
            deps.append(far)
            near.add(len(out) - 1)
        tracker.record(acc, op.unit, len(out))
        out.append(op)
        deps.append(near)
    pos, count = [], dict.fromkeys(_ORDER, 0)
    for op in out:
        op.flags = {}
        pos.append(count[op.unit])
        count[op.unit] += 1
    by_pos = {(op.unit, p): op for op, p in zip(out, pos, strict=True)}
    newest: dict[tuple[Unit, Unit], int] = {}
    for op, dep in zip(out, deps, strict=True):
        for prod in _ORDER:
            need = max((pos[j] for j in dep if out[j].unit is prod), default=-1)
            key = (prod, op.unit)
            if need > newest.get(key, -1):
                newest[key] = need
                toward_prev = _ORDER.index(prod) < _ORDER.index(op.unit)
                op.flags["pop_prev" if toward_prev else "pop_next"] = 1
                by_pos[(prod, need)].flags["push_next" if toward_prev else "push_prev"] = 1
    return out
