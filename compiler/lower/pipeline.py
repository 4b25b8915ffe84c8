"""The lowering as an ordered list of stages over one shared context (``Lowering``): each
stage reads what the stages before it left there and adds its own part, as VTA's build pass
list and FINN's build steps do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...arch import AccelConfig
from ...boards import target_config
from ...host.program import Program
from ...host.tensors import InputFold
from ..ir import IntGraph
from ..tokens import Op
from .assembly import PassPlan, Window, build_program, encode, lay_out_window
from .checks import CompileError, check_input
from .costs import PassCosts
from .input_fold import choose_fold, folded_graph
from .ordering import order
from .packing import pass_blobs
from .passes import FMap, Pass
from .planning import plan_passes
from .records import layer_record
from .scheduling import Halves, Scheduler
from .tiling import Tiling, candidates


@dataclass
class Lowering:
    """What the stages share: the graph, config and batch, then each stage's result."""

    graph: IntGraph
    cfg: AccelConfig
    batch: int
    fold: InputFold | None = None
    passes: list[Pass] = field(default_factory=list)
    in_map: FMap | None = None
    out_map: FMap | None = None
    candidates: list[list[Tiling]] = field(default_factory=list)
    tilings: list[Tiling] = field(default_factory=list)
    blobs: list[tuple[bytes, bytes]] = field(default_factory=list)
    plans: list[PassPlan] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    window: Window | None = None
    words: list[int] = field(default_factory=list)
    insn_owner: list[int] = field(default_factory=list)
    program: Program | None = None


def check_inputs(s: Lowering) -> None:
    """Refuse a config, batch or input range the lowering cannot take."""
    s.batch = check_input(s.graph, s.cfg, s.batch)


def fold_first_layer(s: Lowering) -> None:
    """A few-channel first conv folded into more lanes where the cost model says it is faster;
    the graph becomes the folded one (``input_fold``)."""
    s.fold = choose_fold(s.graph, s.cfg, s.batch)
    if s.fold is not None:
        s.graph = folded_graph(s.graph, s.fold)


def plan(s: Lowering) -> None:
    """Every graph node as on-chip passes between feature maps in DDR (``planning``)."""
    s.passes, s.in_map, s.out_map = plan_passes(s.graph, s.cfg)


def tile_passes(s: Lowering) -> None:
    """Each pass's candidate tilings: tiles, weight groups, residency, loop order (``tiling``)."""
    s.candidates = [candidates(p, s.cfg, s.batch) for p in s.passes]


def choose_tilings(s: Lowering) -> None:
    """Each pass's tiling with the fewest estimated cycles, then DMA bytes (``costs``)."""
    costs = PassCosts(s.cfg)
    s.tilings = [costs.choose(p, c) for p, c in zip(s.passes, s.candidates, strict=True)]


def pack_weights(s: Lowering) -> None:
    """Each pass's W and Q bytes (``packing``)."""
    s.blobs = [pass_blobs(p, t.geom, s.cfg) for p, t in zip(s.passes, s.tilings, strict=True)]


def schedule(s: Lowering) -> None:
    """Each pass's loads, GEMMs and stores, and its record (``scheduling``, ``records``)."""
    halves = Halves()
    for p, t, (w_blob, q_blob) in zip(s.passes, s.tilings, s.blobs, strict=True):
        ops = Scheduler(p, t, s.cfg, halves).run()
        rec = layer_record(p, t, s.cfg, s.batch, ops, len(w_blob), len(q_blob))
        s.plans.append(PassPlan(rec, ops, w_blob, q_blob))


def add_tokens(s: Lowering) -> None:
    """The whole program's order and dependency tokens (``ordering``)."""
    s.ops = order(s.cfg, [o for p in s.plans for o in p.ops])


def lay_out(s: Lowering) -> None:
    """The DDR window: segments and feature map regions (``assembly``)."""
    s.window = lay_out_window(s.cfg, s.plans, len(s.ops))


def encode_instructions(s: Lowering) -> None:
    """Every instruction with its DDR address, as words (``assembly``)."""
    s.words, s.insn_owner = encode(s.cfg, s.plans, s.ops, s.window)


def assemble(s: Lowering) -> None:
    """The Program (``assembly``)."""
    slots = s.in_map.slots, s.out_map.slots
    s.program = build_program(
        s.graph, s.cfg, s.batch, s.plans, s.window, s.words, s.insn_owner, slots, s.fold
    )


STAGES: tuple[Callable[[Lowering], None], ...] = (
    check_inputs,
    fold_first_layer,
    plan,
    tile_passes,
    choose_tilings,
    pack_weights,
    schedule,
    add_tokens,
    lay_out,
    encode_instructions,
    assemble,
)
"""The lowering, in order."""


def lower(graph: IntGraph, cfg: AccelConfig, batch: int) -> Program:
    """Compile an IntGraph for ``cfg`` at a fixed ``batch`` size into one Program."""
    s = Lowering(graph, cfg, batch)
    for stage in STAGES:
        stage(s)
    return s.program


def compile_graph(graph: IntGraph, example_input: object, config: AccelConfig | str) -> Program:
    """Lower ``graph`` for ``config`` (or a board or preset name, as
    ``rmsmp.boards.target_config`` reads it) at the batch size ``example_input.shape[0]``.

    ``rmsmp.compile`` calls this after exporting a torch model (``rmsmp.quant``); an IntGraph
    (``rmsmp.from_qonnx``'s, or ``compiler.graphfile``'s) comes here without PyTorch.
    """
    cfg = config if isinstance(config, AccelConfig) else target_config(config)
    shape = tuple(int(i) for i in example_input.shape)  # type: ignore[attr-defined]
    if shape[1:] != tuple(graph.input_shape):
        raise CompileError(
            f"example_input has per-sample shape {shape[1:]} but the model takes "
            f"{tuple(graph.input_shape)}; pass an input of shape "
            f"({', '.join(['batch', *map(str, graph.input_shape)])})"
        )
    return lower(graph, cfg, batch=shape[0])
