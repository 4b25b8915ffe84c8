"""Dependency tokens: the run rules of ``isa.schedule`` and the flags ``compiler.tokens`` sets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rmsmp.arch import AccelConfig, isa
from rmsmp.arch.isa import Opcode, Unit
from rmsmp.compiler.tokens import Op, add_tokens, hoist_loads

TINY = AccelConfig.for_board("tiny")
L, G, S, Y = Opcode.LOAD, Opcode.GEMM, Opcode.STORE, Opcode.SYNC


def _insn(op, **flags):
    """An instruction as ``schedule`` sees it: only its unit and token flags matter."""
    return isa.Insn(op, {**dict.fromkeys(isa.TOKEN_FLAGS, 0), **flags})


# --- isa.schedule ---------------------------------------------------------------------------


def test_schedule_chain_in_order():
    insns = [_insn(L, push_next=1), _insn(G, pop_prev=1, push_next=1), _insn(S, pop_prev=1)]
    sched = isa.schedule(TINY, insns)
    assert (sched.order, sched.dispatched, sched.deadlock) == ([0, 1, 2], 3, False)


def test_schedule_follows_tokens_not_program_order():
    """A consumer that comes first in program order waits for a later producer."""
    sched = isa.schedule(TINY, [_insn(G, pop_prev=1), _insn(L, push_next=1)])
    assert (sched.order, sched.deadlock) == ([1, 0], False)
    sched = isa.schedule(TINY, [_insn(S, pop_prev=1), _insn(G, push_next=1)])
    assert (sched.order, sched.deadlock) == ([1, 0], False)
    sched = isa.schedule(TINY, [_insn(G, pop_next=1), _insn(S, push_prev=1)])
    assert (sched.order, sched.deadlock) == ([1, 0], False)
    sched = isa.schedule(TINY, [_insn(L, pop_next=1), _insn(G, push_prev=1)])
    assert (sched.order, sched.deadlock) == ([1, 0], False)


def test_schedule_sync_relays_store_to_load():
    insns = [_insn(S, push_prev=1), _insn(Y, pop_next=1, push_prev=1), _insn(L, pop_next=1)]
    assert isa.schedule(TINY, insns).order == [0, 1, 2]
    insns = [_insn(L, pop_next=1), _insn(Y, pop_next=1, push_prev=1), _insn(S, push_prev=1)]
    assert isa.schedule(TINY, insns).order == [2, 1, 0]
    # without the SYNC's push the LOAD waits forever
    sched = isa.schedule(TINY, [_insn(S, push_prev=1), _insn(Y, pop_next=1), _insn(L, pop_next=1)])
    assert (sched.order, sched.dispatched, sched.deadlock) == ([0, 1], 3, True)


def test_schedule_fetch_stops_at_a_full_queue():
    insns = [_insn(G, pop_prev=1), _insn(G), _insn(G), _insn(G), _insn(L, push_next=1)]
    sched = isa.schedule(TINY, insns)
    assert (sched.order, sched.dispatched, sched.deadlock) == ([], TINY.cmd_depth + 1, True)
    deep = dataclasses.replace(TINY, cmd_depth=3)
    assert isa.schedule(deep, insns).order == [4, 0, 1, 2, 3]


def _explore(cfg, insns, rng):
    """The run rules of ``arch.isa``, written again: enabled actions taken in a random order."""
    pops = {Unit.LOAD: {"pop_next": "c2l"}, Unit.COMPUTE: {"pop_prev": "l2c", "pop_next": "s2c"}}
    pops[Unit.STORE] = {"pop_prev": "c2s"}
    pushes = {Unit.LOAD: {"push_next": "l2c"}, Unit.STORE: {"push_prev": "s2c"}}
    pushes[Unit.COMPUTE] = {"push_prev": "c2l", "push_next": "c2s"}
    units = (Unit.LOAD, Unit.COMPUTE, Unit.STORE)
    queue = {u: [] for u in units}
    cur = dict.fromkeys(units)  # (index, executed)
    tok = dict.fromkeys(("l2c", "c2l", "c2s", "s2c"), 0)
    order, fetched = [], 0
    while True:
        acts = []
        if fetched < len(insns) and len(queue[insns[fetched].unit]) < cfg.cmd_depth:
            acts.append(("fetch", None))
        for u in units:
            if cur[u] is None:
                if queue[u]:
                    acts.append(("take", u))
                continue
            i, done = cur[u]
            flags = insns[i].args
            if not done and all(tok[t] > 0 for f, t in pops[u].items() if flags[f]):
                acts.append(("exec", u))
            if done and all(tok[t] < cfg.token_depth for f, t in pushes[u].items() if flags[f]):
                acts.append(("push", u))
        if not acts:
            break
        kind, u = acts[rng.integers(len(acts))]
        if kind == "fetch":
            queue[insns[fetched].unit].append(fetched)
            fetched += 1
        elif kind == "take":
            cur[u] = (queue[u].pop(0), False)
        elif kind == "exec":
            i = cur[u][0]
            for f, t in pops[u].items():
                tok[t] -= insns[i].args[f]
            order.append(i)
            cur[u] = (i, True)
        else:
            for f, t in pushes[u].items():
                tok[t] += insns[cur[u][0]].args[f]
            cur[u] = None
    idle = all(c is None for c in cur.values()) and not any(queue.values())
    return order, fetched, not (idle and fetched == len(insns))


def _random_program(rng, n):
    allowed = {
        L: ("pop_next", "push_next"),
        G: isa.TOKEN_FLAGS,
        Y: isa.TOKEN_FLAGS,
        S: ("pop_prev", "push_prev"),
    }
    out = []
    for _ in range(n):
        op = (L, G, S, Y)[rng.choice(4, p=[0.35, 0.3, 0.25, 0.1])]
        out.append(_insn(op, **{f: int(rng.random() < 0.3) for f in allowed[op]}))
    return out


@pytest.mark.parametrize("depths", [(1, 1), (2, 2), (3, 1), (8, 8)])
def test_schedule_end_state_does_not_depend_on_timing(depths):
    """Random token flags: any interleaving of the units ends where ``schedule`` ends, having
    executed the same instructions; ``order`` keeps each unit in program order and never pops
    a token that no earlier instruction pushed."""
    cfg = dataclasses.replace(TINY, cmd_depth=depths[0], token_depth=depths[1])
    rng = np.random.default_rng(sum(depths))
    outcomes = set()
    for _ in range(150):
        insns = _random_program(rng, int(rng.integers(1, 14)))
        sched = isa.schedule(cfg, insns)
        outcomes.add(sched.deadlock)
        for _ in range(4):
            order, fetched, deadlock = _explore(cfg, insns, rng)
            assert (fetched, deadlock) == (sched.dispatched, sched.deadlock)
            assert sorted(order) == sorted(sched.order)
        for u in Unit:
            mine = [i for i in sched.order if insns[i].unit is u]
            assert mine == sorted(mine)
        counters = {
            ("pop_next", Unit.LOAD): ("push_prev", Unit.COMPUTE),
            ("pop_prev", Unit.COMPUTE): ("push_next", Unit.LOAD),
            ("pop_next", Unit.COMPUTE): ("push_prev", Unit.STORE),
            ("pop_prev", Unit.STORE): ("push_next", Unit.COMPUTE),
        }
        for (pop, cu), (push, pu) in counters.items():
            made = used = 0
            for i in sched.order:
                a, u = insns[i].args, insns[i].unit
                if u is cu and a[pop]:
                    used += 1
                    assert used <= made
                if u is pu and a[push]:
                    made += 1
        if not sched.deadlock:
            assert sorted(sched.order) == list(range(len(insns)))
    assert outcomes == {False, True}  # both endings were exercised


# --- compiler.tokens.add_tokens -------------------------------------------------------------


def _op(op, reads=(), writes=()):
    return Op(op, {}, tuple(reads), tuple(writes))


def _flags(ops):
    return [(o.op, {k: v for k, v in o.flags.items() if v}) for o in ops]


def test_store_then_load_of_the_same_ddr_gets_a_sync():
    store = _op(S, [("OUT", 0, 1)], [("fm1", 0, 64)])
    load = _op(L, [("fm1", 32, 96)], [("X", 0, 8)])
    assert _flags(add_tokens([store, load])) == [
        (S, {"push_prev": 1}),
        (Y, {"pop_next": 1, "push_prev": 1}),
        (L, {"pop_next": 1}),
    ]


def test_load_then_store_over_what_it_read_gets_a_sync():
    load = _op(L, [("fm0", 0, 64)], [("X", 0, 8)])
    store = _op(S, [("OUT", 0, 1)], [("fm0", 56, 64)])
    assert _flags(add_tokens([load, store])) == [
        (L, {"push_next": 1}),
        (Y, {"pop_prev": 1, "push_next": 1}),
        (S, {"pop_prev": 1}),
    ]


def test_no_tokens_without_a_hazard():
    ops = [
        _op(S, [("OUT", 0, 1)], [("fm1", 0, 64)]),
        _op(L, [("fm1", 64, 128)], [("X", 0, 8)]),  # disjoint DDR
        _op(L, [("fm0", 0, 64)], [("X", 8, 16)]),
        _op(G, [("X", 16, 24)], [("ACC", 0, 2)]),  # reads nothing loaded
        _op(S, [("OUT", 4, 5)], [("fm2", 0, 8)]),
        _op(L, [("fm2", 8, 16)], [("W", 0, 4)]),
    ]
    out = add_tokens(ops)
    assert [o.op for o in out] == [o.op for o in ops]
    assert all(not any(o.flags.values()) for o in out)
    # two readers of one range are no hazard, and neither is a unit after itself
    ops = [
        _op(L, [("fm0", 0, 8)], [("X", 0, 8)]),
        _op(L, [("fm0", 0, 8)], [("X", 0, 8)]),
        _op(S, [("OUT", 0, 1)], [("fm3", 0, 8)]),
        _op(S, [("OUT", 0, 1)], [("fm3", 0, 8)]),
    ]
    assert all(not any(o.flags.values()) for o in add_tokens(ops))


def test_consumer_pops_only_when_its_producer_moves_forward():
    ops = [
        _op(L, writes=[("X", 0, 8)]),  # L0
        _op(L, writes=[("X", 8, 16)]),  # L1
        _op(L, writes=[("X", 16, 24)]),  # L2
        _op(G, [("X", 8, 16)], [("ACC", 0, 1)]),  # needs L1: pop
        _op(G, [("X", 0, 8)], [("ACC", 1, 2)]),  # needs L0, older than L1: no pop
        _op(G, [("X", 8, 16)], [("ACC", 2, 3)]),  # needs L1 again: no pop
        _op(G, [("X", 16, 24)], [("OUT", 0, 1)]),  # needs L2: pop
        _op(S, [("OUT", 0, 1)], [("fm1", 0, 8)]),  # needs the last GEMM: pop
        _op(G, [("X", 0, 24)], [("OUT", 1, 2)]),  # newest producer L2 already popped for
    ]
    assert _flags(add_tokens(ops)) == [
        (L, {}),
        (L, {"push_next": 1}),
        (L, {"push_next": 1}),
        (G, {"pop_prev": 1}),
        (G, {}),
        (G, {}),
        (G, {"pop_prev": 1, "push_next": 1}),
        (S, {"pop_prev": 1}),
        (G, {}),
    ]


def test_overwrite_after_read_waits_for_the_reader():
    ops = [
        _op(L, writes=[("X", 0, 8)]),
        _op(G, [("X", 0, 8)], [("OUT", 0, 4)]),
        _op(L, writes=[("X", 4, 12)]),  # reuses the slot the GEMM read
        _op(S, [("OUT", 0, 4)], [("fm1", 0, 32)]),
        _op(G, [("X", 16, 24)], [("OUT", 2, 3)]),  # overwrites OUT the STORE reads
    ]
    assert _flags(add_tokens(ops)) == [
        (L, {"push_next": 1}),
        (G, {"pop_prev": 1, "push_prev": 1, "push_next": 1}),
        (L, {"pop_next": 1}),
        (S, {"pop_prev": 1, "push_prev": 1}),
        (G, {"pop_next": 1}),
    ]


def _random_ops(rng, n):
    def rng_range(space, size):
        lo = int(rng.integers(0, size))
        return (space, lo, lo + int(rng.integers(1, 5)))

    ops = []
    for _ in range(n):
        kind = rng.choice(3, p=[0.4, 0.4, 0.2])
        if kind == 0:
            buf = ("X", "W", "Q")[rng.integers(3)]
            ops.append(_op(L, [rng_range(f"d{rng.integers(2)}", 12)], [rng_range(buf, 12)]))
        elif kind == 1:
            reads = [rng_range("X", 12), rng_range("W", 12), rng_range("Q", 12)]
            if rng.random() < 0.5:
                reads.append(rng_range("ACC", 6))
            dst = rng_range("OUT" if rng.random() < 0.5 else "ACC", 6)
            ops.append(_op(G, reads, [dst]))
        else:
            ops.append(_op(S, [rng_range("OUT", 6)], [rng_range(f"d{rng.integers(2)}", 12)]))
    return ops


def _hazard(a, b):
    def overlap(xs, ys):
        return any(s == t and lo < hi2 and lo2 < hi for s, lo, hi in xs for t, lo2, hi2 in ys)

    return overlap(a.writes, b.reads) or overlap(a.reads, b.writes) or overlap(a.writes, b.writes)


@pytest.mark.parametrize("depths", [(64, 64), (2, 2), (1, 1)])
def test_random_programs_run_every_hazard_in_order(depths):
    """Pushes and pops that add_tokens sets balance on every counter, and every pair of
    instructions of different units that touch a common range runs in program order. With
    queues and counters as deep as the program it always runs to the end; shallower ones may
    stall it (add_tokens does not know the depths), but what runs still respects every hazard."""
    cfg = dataclasses.replace(TINY, cmd_depth=depths[0], token_depth=depths[1])
    rng = np.random.default_rng(depths[0] * 100 + depths[1])
    syncs = finished = 0
    for _ in range(150):
        ops = _random_ops(rng, int(rng.integers(2, 25)))
        out = add_tokens(ops)
        assert [o for o in out if o.op is not Y] == ops
        syncs += sum(o.op is Y for o in out)
        insns = [_insn(o.op, **o.flags) for o in out]
        sched = isa.schedule(cfg, insns)
        if depths[0] >= len(out) and depths[1] >= len(out):
            assert not sched.deadlock
        if not sched.deadlock:
            finished += 1
            assert sorted(sched.order) == list(range(len(out)))
        pos = {i: p for p, i in enumerate(sched.order)}
        for j in pos:
            for i in range(j):
                if out[i].unit is not out[j].unit and _hazard(out[i], out[j]):
                    assert i in pos and pos[i] < pos[j], (i, j)
        for push, pop in (
            ((Unit.LOAD, "push_next"), (Unit.COMPUTE, "pop_prev")),
            ((Unit.COMPUTE, "push_prev"), (Unit.LOAD, "pop_next")),
            ((Unit.COMPUTE, "push_next"), (Unit.STORE, "pop_prev")),
            ((Unit.STORE, "push_prev"), (Unit.COMPUTE, "pop_next")),
        ):
            made = sum(o.flags.get(push[1], 0) for o in out if o.unit is push[0])
            used = sum(o.flags.get(pop[1], 0) for o in out if o.unit is pop[0])
            assert made == used
    assert syncs > 0 and finished > 100


# --- compiler.tokens.hoist_loads ------------------------------------------------------------


def _ahead_counts(ops, out):
    """For every prefix of ``out``: how many of its loads jumped over an instruction of ``ops``
    that is not in the prefix yet."""
    where = {id(o): i for i, o in enumerate(ops)}
    counts, done = [], set()
    for o in out:
        done.add(where[id(o)])
        frontier = min(set(range(len(ops))) - done, default=len(ops))
        counts.append(sum(1 for i in done if i > frontier and ops[i].op is L))
    return counts


@pytest.mark.parametrize("ahead", [None, 1, 3])
def test_hoisting_keeps_hazards_and_bounds_loads_ahead(ahead):
    """Only loads move, each up past instructions it has no hazard with; loads keep their order;
    with ``ahead`` no more than that many loads are ahead of their place at any point."""
    rng = np.random.default_rng(7 if ahead is None else ahead)
    moved = 0
    for _ in range(100):
        ops = _random_ops(rng, int(rng.integers(2, 30)))
        out = hoist_loads(ops, ahead)
        assert sorted(map(id, out)) == sorted(map(id, ops))
        for kind in (lambda o: o.op is L, lambda o: o.op is not L):
            assert [o for o in out if kind(o)] == [o for o in ops if kind(o)]
        pos = {id(o): i for i, o in enumerate(out)}
        for j, b in enumerate(ops):
            for a in ops[:j]:
                if _hazard(a, b):
                    assert pos[id(a)] < pos[id(b)]
        counts = _ahead_counts(ops, out)
        moved += max(counts)
        if ahead is not None:
            assert max(counts) <= ahead
    assert moved > 0


def test_bounded_hoisting_does_not_fill_the_counters():
    """Loads that all wait for one GEMM (they overwrite what it reads), each read by its own
    later GEMM: hoisted without a bound they run ahead of every reader, fill the l2c counter
    and the load queue, and fetch never reaches a GEMM that would pop (as the global pool and
    Linear of a ResNet-18 did); ``ahead = token_depth`` keeps them in step."""
    cfg = dataclasses.replace(TINY, cmd_depth=2, token_depth=2)
    ops = [_op(G, [("W", 0, 100)], [("OUT", 0, 1)])]
    for i in range(8):
        ops.append(_op(L, [("d0", i, i + 1)], [("W", 10 * i, 10 * i + 10)]))
        ops.append(_op(G, [("W", 10 * i, 10 * i + 10)], [("OUT", 1 + i, 2 + i)]))

    def deadlocks(order):
        return isa.schedule(cfg, [_insn(o.op, **o.flags) for o in add_tokens(order)]).deadlock

    assert not deadlocks(ops)
    assert deadlocks(hoist_loads(ops))
    bounded = hoist_loads(ops, cfg.token_depth)
    assert bounded != ops and not deadlocks(bounded)


def test_lowered_programs_run_with_one_entry_queues_and_counters():
    """The compiler's programs need no slack: one command per queue, one token per counter."""
    from graphgen import random_graph, random_specs

    from rmsmp.compiler.lower import lower
    from rmsmp.host.runtime import run

    cfg = dataclasses.replace(TINY, name="tight", cmd_depth=1, token_depth=1)
    for seed in range(6):
        rng = np.random.default_rng(500 + seed)
        shape, specs = random_specs(rng, cfg, max_ch=14)
        graph = random_graph(rng, cfg, shape, specs)
        prog = lower(graph, cfg, int(rng.integers(1, 3)))
        x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(2, *graph.input_shape))
        assert np.array_equal(run(prog, x), graph.evaluate(x))
