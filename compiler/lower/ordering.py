"""The program order and the dependency tokens: every load hoisted ahead of the compute it feeds
(``tokens.hoist_loads``), with at most ``token_depth`` loads ahead of their place at a time
(more fill the token counter and the load queue before fetch reaches their readers), unless
that order still deadlocks; then every load just before its first reader, which the token
counters always allow."""

from __future__ import annotations

from ...arch import AccelConfig, isa
from ..tokens import Op, add_tokens, hoist_loads
from .checks import CompileError


def order(cfg: AccelConfig, ops: list[Op]) -> list[Op]:
    """``ops`` (the passes' instructions in pass order) with SYNCs and token flags."""
    hoisted = add_tokens(hoist_loads(ops, cfg.token_depth))
    if not isa.schedule(cfg, _tokens_only(hoisted)).deadlock:
        return hoisted
    plain = add_tokens(ops)
    sched = isa.schedule(cfg, _tokens_only(plain))
    if sched.deadlock:
        raise CompileError(
            f"internal error: the token schedule deadlocks after {sched.dispatched} of "
            f"{len(plain)} instructions; please report this with the model"
        )
    return plain


def _tokens_only(ops: list[Op]) -> list[isa.Insn]:
    """What ``isa.schedule`` reads of each instruction: its unit and token flags."""
    zero = dict.fromkeys(isa.TOKEN_FLAGS, 0)
    return [isa.Insn(o.op, {**zero, **o.flags}) for o in ops]
