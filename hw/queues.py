"""Command queues, dependency-token counters, and the per-unit command sequencer (``arch.isa``).

Fetch pushes each checked instruction, with its program index, into the command queue of its
unit. A unit runs ``sequence``: take the head of the queue, wait until every counter the
instruction pops holds a token and take them at once, execute, wait until every counter it pushes
has room and add to them at once. Counters have one producer and one consumer each, so no unit
ever loses an enabled action to another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth import Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig, isa
from ..arch.isa import TOKEN_FLAGS, UNIT_OF, Error, Opcode, Unit, layout
from ..arch.regs import REG_BYTES

PC_BITS = REG_BYTES * 8
"""Width of a program index (the PC register's width)."""
ERROR_BITS = max(Error).bit_length()
UNIT_BITS = max(Unit).bit_length()

POPS: dict[Unit, tuple[str, ...]] = {u: tuple(f) for u, f in isa.POPS.items()}
"""Token flags each unit may pop (``arch.isa.POPS``)."""
PUSHES: dict[Unit, tuple[str, ...]] = {u: tuple(f) for u, f in isa.PUSHES.items()}
"""Token flags each unit may push (``arch.isa.PUSHES``)."""


def unit_ops(unit: Unit) -> list[Opcode]:
    """Opcodes whose instructions go to ``unit``'s queue."""
    return [op for op, u in UNIT_OF.items() if u is unit]


def cmd_bits(cfg: AccelConfig, unit: Unit) -> int:
    """Instruction bits a unit's commands keep: up to the end of its opcodes' last field."""
    lay = layout(cfg)
    return max(f.offset + f.width for op in unit_ops(unit) for f in lay[op].values())


def command_layout(cfg: AccelConfig, unit: Unit) -> data.StructLayout:
    """One queue entry: the (truncated) instruction and its program index."""
    return data.StructLayout({"insn": cmd_bits(cfg, unit), "pc": PC_BITS})


def field(cfg: AccelConfig, insn: Value, op: Opcode, name: str) -> Value:
    """Field ``name`` of opcode ``op`` in the instruction bits ``insn`` (signed if it is)."""
    f = layout(cfg)[op][name]
    v = insn[f.offset : f.offset + f.width]
    return v.as_signed() if f.signed else v


class FaultSignature(wiring.Signature):
    """A fault report (producer view): the run must stop with ``code``, PC ``pc``, ``unit``."""

    def __init__(self) -> None:
        super().__init__(
            {
                "valid": Out(1),
                "code": Out(ERROR_BITS),
                "unit": Out(UNIT_BITS),
                "pc": Out(PC_BITS),
            }
        )


class TokenSignature(wiring.Signature):
    """One side of a token counter, unit view: ``ok`` (a token to pop / room to push), ``take``."""

    def __init__(self) -> None:
        super().__init__({"take": Out(1), "ok": In(1)})


class CmdQueue(wiring.Component):
    """A unit's command queue: ``cmd_depth`` entries, first-word fall-through."""

    def __init__(self, cfg: AccelConfig, unit: Unit) -> None:
        self.cfg, self.unit = cfg, unit
        lay = command_layout(cfg, unit)
        super().__init__({"w": In(stream.Signature(lay)), "r": Out(stream.Signature(lay))})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(
            width=command_layout(self.cfg, self.unit).size, depth=self.cfg.cmd_depth
        )
        m.d.comb += [
            fifo.w_data.eq(self.w.payload),
            fifo.w_en.eq(self.w.valid),
            self.w.ready.eq(fifo.w_rdy),
            self.r.payload.eq(fifo.r_data),
            self.r.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.r.ready),
        ]
        return m


class TokenCounter(wiring.Component):
    """Tokens between two neighbouring units: 0..``token_depth``, one producer, one consumer."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.depth = cfg.token_depth
        super().__init__({"push": In(TokenSignature()), "pop": In(TokenSignature())})

    def elaborate(self, platform) -> Module:
        m = Module()
        count = Signal(range(self.depth + 1))
        m.d.comb += [self.push.ok.eq(count != self.depth), self.pop.ok.eq(count != 0)]
        push = self.push.take & self.push.ok
        pop = self.pop.take & self.pop.ok
        with m.If(push & ~pop):
            m.d.sync += count.eq(count + 1)
        with m.Elif(pop & ~push):
            m.d.sync += count.eq(count - 1)
        return m


@dataclass
class Sequence:
    """What ``sequence`` gives a unit.

    ``cmd`` is the instruction being run (loaded at least one cycle before ``start``); ``take``
    is high in the cycle it loads, from ``next`` (the queue's head), so ``prepare`` can register
    what the unit derives from it alongside; ``start`` pulses in the cycle its pops are taken
    (the unit's execution registers load then);
    ``working`` is high while it executes; ``idle`` (no command, empty queue) and ``blocked``
    (waiting for tokens) mean the unit cannot progress. The cycle that adds the pushes also takes
    the next command, so back-to-back instructions cost two cycles of sequencing.
    """

    cmd: data.View
    take: Signal
    next: data.View
    start: Signal
    working: Signal
    idle: Signal
    blocked: Signal

    def prepare(self, m: Module, derive: Callable[[Value], Value], name: str) -> Signal:
        """``derive(insn)`` of the command being run, registered as the command is taken: a
        product or sum of its fields ready at ``start`` without adding to that cycle's paths."""
        value = Signal.like(derive(self.cmd.insn), name=name)
        with m.If(self.take):
            m.d.sync += value.eq(derive(self.next.insn))
        return value


def sequence(
    m: Module,
    cfg: AccelConfig,
    unit: Unit,
    queue: stream.Interface,
    tokens: dict[str, wiring.PureInterface],
    done: Value,
) -> Sequence:
    """Build the take/pop/execute/push sequencer of ``unit`` into ``m``.

    ``queue`` is the unit's end of its command queue, ``tokens`` its token ports by flag name
    (``POPS[unit] + PUSHES[unit]``), ``done`` is high in the cycle execution has finished.
    """
    lay = layout(cfg)
    flag_bits = {}
    for name in TOKEN_FLAGS:
        offs = {lay[op][name].offset for op in unit_ops(unit)}
        if len(offs) != 1:
            raise ValueError(f"{unit.name}: token flag {name} sits at different offsets {offs}")
        flag_bits[name] = offs.pop()
    if set(tokens) != set(POPS[unit] + PUSHES[unit]):
        raise ValueError(f"{unit.name} needs token ports {POPS[unit] + PUSHES[unit]}")
    cmd = Signal(command_layout(cfg, unit))
    seq = Sequence(cmd, Signal(), queue.payload, Signal(), Signal(), Signal(), Signal())
    with m.If(seq.take):
        m.d.sync += cmd.eq(queue.payload)

    def flag(name: str) -> Value:
        return cmd.insn[flag_bits[name]]

    def all_ok(names: tuple[str, ...]) -> Value:
        ok = Value.cast(1)
        for n in names:
            ok = ok & (~flag(n) | tokens[n].ok)
        return ok

    pops_ok, pushes_ok = all_ok(POPS[unit]), all_ok(PUSHES[unit])
    with m.FSM():
        with m.State("IDLE"):
            m.d.comb += [queue.ready.eq(1), seq.idle.eq(~queue.valid), seq.take.eq(queue.valid)]
            with m.If(queue.valid):
                m.next = "POP"
        with m.State("POP"):
            m.d.comb += seq.blocked.eq(~pops_ok)
            with m.If(pops_ok):
                m.d.comb += seq.start.eq(1)
                m.d.comb += [tokens[n].take.eq(flag(n)) for n in POPS[unit]]
                m.next = "EXEC"
        with m.State("EXEC"):
            m.d.comb += seq.working.eq(1)
            with m.If(done):
                m.next = "PUSH"
        with m.State("PUSH"):
            m.d.comb += seq.blocked.eq(~pushes_ok)
            with m.If(pushes_ok):
                m.d.comb += [tokens[n].take.eq(flag(n)) for n in PUSHES[unit]]
                m.d.comb += [queue.ready.eq(1), seq.take.eq(queue.valid)]
                with m.If(queue.valid):
                    m.next = "POP"
                with m.Else():
                    m.next = "IDLE"
    return seq


def token_members(unit: Unit) -> dict[str, wiring.Member]:
    """Signature members of a unit's token ports, named by flag."""
    return {n: Out(TokenSignature()) for n in POPS[unit] + PUSHES[unit]}
