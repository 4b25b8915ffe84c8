"""The ``rmsmp`` command line: generate hardware, quantize, evaluate, run or inspect a Program.

Every expected failure is one line on stderr that names the file or argument and the fix; the
exit code says which kind it was (``--debug`` adds the traceback):

  0    success
  1    runtime failure: toolchain missing, accelerator error or timeout, failed check
  2    usage or input error: bad argument; missing, unreadable or malformed file (Program,
       checkpoint, input, config, data set); output path that cannot be written
  130  interrupted (Ctrl-C); ``quantize`` keeps the last finished epoch and resumes from it
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .arch import AccelConfig
from .boards import BOARDS, TARGETS, target_config
from .host import backends
from .host.hostops import NUMERICS
from .quant.methods import METHODS

if TYPE_CHECKING:
    from .compiler.ir import IntGraph

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad argument, input file or output path (exit 2); the message names it and the fix."""


class RunInterruptedError(Exception):
    """Ctrl-C, with what was kept (exit 130)."""


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int in [lo, hi] (no upper bound when ``hi`` is None)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            want = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be {want}, got {v}")
        return v

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def readable_file(path: str, what: str) -> Path:
    """``path`` as a Path, checked to be an existing, readable file (not a directory)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {path} is a directory; give the {what} file itself")
    if not p.exists():
        raise UsageError(f"{what} {path} does not exist; check the path")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what} {path} is not readable; check its permissions")
    return p


def writable_file(path: str, what: str, suffix: str = "") -> Path:
    """The file ``path`` will be written as (``suffix`` appended unless present, as np.save
    does), checked before any long work: not a directory, in an existing writable directory."""
    p = Path(path)
    if suffix and not p.name.endswith(suffix):
        if p.is_dir():
            raise UsageError(
                f"{what} {path} is a directory; give a file name, e.g. {p / ('out' + suffix)}"
            )
        p = p.with_name(p.name + suffix)
    if p.is_dir():
        raise UsageError(f"{what} {p} is a directory; give a file name inside it")
    parent = p.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"{what} {p}: {parent} {why}; create the directory or choose another")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{what} {p} is not writable; check permissions or choose another path")
    return p


def writable_dir(path: str, what: str) -> Path:
    """``path`` as a directory that exists and is writable, or that can be created."""
    p = Path(path)
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {path}: {probe} is a file, not a directory; choose another path")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{what} {path}: {probe} is not writable; choose another path")
    return p


@contextmanager
def working(description: str) -> Iterator[None]:
    """A spinner with elapsed time on stderr while a long step runs (rich, when installed)."""
    try:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    except ImportError:
        print(f"{description} ...", file=sys.stderr)
        yield
        return
    cols = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*cols, console=Console(stderr=True), transient=True) as prog:
        prog.add_task(description, total=None)
        yield


def build_rtl(cfg: AccelConfig) -> None:
    """Build (or find cached) the Verilated simulator for ``cfg`` under a spinner."""
    from .sim.verilator import build

    with working(
        f"building the Verilator RTL simulator for {cfg.name} (config {cfg.hash}); "
        "about a minute the first time, cached afterwards"
    ):
        build(cfg)


BOARD_HELP = f"a board (its default config) or an AccelConfig preset: {', '.join(TARGETS)}"
"""--board takes any name ``target_config`` takes; it refuses an unknown one with its message."""


def _generate(args: argparse.Namespace) -> int:
    from .hw.generate import generate

    cfg = AccelConfig.load(args.config) if args.config else target_config(args.board)
    out = writable_dir(args.output, "-o")
    paths = generate(cfg, out)
    if args.lint:
        from .sim.verilator import lint

        with working("verilator lint"):
            lint(paths["verilog"])
        print("verilator lint: no errors")
    for k, p in paths.items():
        print(f"{k}: {p}")
    print(f"config hash: {cfg.hash}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .host.program import Program
    from .host.runtime import open_device, run_with_stats

    src = readable_file(args.program, "Program")
    inp = readable_file(args.input, "--input")
    out = writable_file(args.output, "-o", suffix=".npy")
    from .host.hybrid import is_hybrid_file

    if is_hybrid_file(src):
        return _run_hybrid(args, src, inp, out)
    program = Program.load(src)
    if args.host_numerics:
        raise UsageError(f"--host-numerics is for hybrid (token model) files; {src} is not one")
    try:
        x = np.load(inp, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--input {inp} is not a .npy array ({e}); save it with np.save") from None
    grid = f"[{program.input_lo}, {program.input_hi}], scale {program.input_scale:g}"
    if np.issubdtype(x.dtype, np.floating):
        print(f"input {inp}: {x.shape} {x.dtype} real values, quantized to the Program's {grid}")
    elif np.issubdtype(x.dtype, np.integer):
        print(f"input {inp}: {x.shape} {x.dtype} integers, taken as already quantized ({grid})")
    options = {"bitfile": args.overlay} if args.overlay else {}
    with working(
        f"opening the {args.backend} backend (a Verilated one builds its simulator the first "
        "time: about a minute, cached afterwards)"
    ):
        dev = open_device(program, args.backend, **options)
    try:
        with working(f"running {len(x)} sample(s) on the {args.backend} backend"):
            res = run_with_stats(program, x, device=dev, timeout_cycles=args.timeout_cycles)
    finally:
        dev.close()
    if args.dequantize:
        y = program.dequantize(res.output)
        kind = f"real values (integers x output scale {program.output_scale:g})"
    else:
        y = res.output
        kind = f"integers (x {program.output_scale:g} for real values, or pass --dequantize)"
    np.save(out, y)
    print(f"output {y.shape} {y.dtype} {kind} -> {out}")
    if res.total_cycles:
        how = " (predicted by the cycle model)" if args.backend == "golden" else ""
        print(f"cycles{how}: {res.total_cycles} (MAC array busy {res.mac_cycles})")
    for step, where in res.placement:
        print(f"  {where:>6}  {step}")
    return 0


def _run_hybrid(args: argparse.Namespace, src: Path, inp: Path, out: Path) -> int:
    """``rmsmp run`` of a hybrid (token model) file: every input from one .npz, in order."""
    import numpy as np

    from .host.hybrid import HybridError, HybridProgram, run_hybrid
    from .host.runtime import open_device

    program = HybridProgram.load(src)
    names = program.meta.get("inputs", [f"x{i}" for i in range(len(program.input_shapes))])
    try:
        with np.load(inp, allow_pickle=False) as data:
            xs = [data[k] for k in data.files]
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--input {inp} is not an .npz ({e}); a token model takes {len(names)} arrays "
            f"({', '.join(names)}): np.savez(path, {', '.join(names)})"
        ) from None
    options = {"bitfile": args.overlay} if args.overlay else {}
    largest = max(program.programs, key=lambda p: p.window_size)
    with working(f"opening the {args.backend} backend"):
        dev = open_device(largest, args.backend, **options)
    try:
        with working(f"running {len(xs[0]) if xs else 0} sample(s) on host + {args.backend}"):
            res = run_hybrid(program, xs, device=dev, numerics=args.host_numerics)
    except HybridError as e:
        raise UsageError(f"--input {inp}: {e}") from None
    finally:
        dev.close()
    np.save(out, res.outputs[0])
    print(f"output {res.outputs[0].shape} {res.outputs[0].dtype} real values -> {out}")
    clock = largest.config.clock_mhz
    how = " (predicted by the cycle model)" if args.backend == "golden" else ""
    cyc = res.device_cycles
    print(
        f"device cycles{how} for {len(xs[0])} sample(s): {cyc:,} = {cyc / clock / 1e3:.2f} ms "
        f"at {clock:g} MHz"
    )
    groups: dict[tuple[str, str], list[float]] = {}
    for o in res.ops:
        groups.setdefault((o.where, o.kind), []).append(o.seconds)
    for (where, kind), secs in sorted(groups.items()):
        print(f"  {where:>8}  {kind:<12} x{len(secs):<4} {1e3 * sum(secs):9.1f} ms")
    print(f"host ops: {sum(o.where == 'host' for o in res.ops)}, {res.host_seconds:.3f} s")
    return 0


def shape_arg(text: str) -> tuple[int, ...]:
    """A per-sample input shape written as comma-separated positive ints, e.g. 3,32,32."""
    try:
        dims = tuple(int(t) for t in text.split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive ints separated by commas (e.g. 3,32,32), got {text!r}"
        )
    return dims


def model_args(parser: argparse.ArgumentParser, what: str) -> None:
    """The model file and its --input-shape, as export and compile take them."""
    parser.add_argument("model", help=what)
    parser.add_argument(
        "--input-shape",
        type=shape_arg,
        help="per-sample input shape, e.g. 3,224,224 (needed for a module)",
    )


def read_graph(src: Path, input_shape: tuple[int, ...] | None) -> IntGraph:
    """The integer graph of a model file: a graph file from ``rmsmp export`` (read without
    PyTorch), else a QAT checkpoint or a saved module (exported with PyTorch)."""
    from .compiler.graphfile import is_graph_file, load_graph

    if is_graph_file(src):
        graph = load_graph(src)
        if input_shape is not None and tuple(input_shape) != tuple(graph.input_shape):
            raise UsageError(
                f"{src} is an integer graph taking {','.join(map(str, graph.input_shape))} "
                f"inputs, not {','.join(map(str, input_shape))}; drop --input-shape"
            )
        return graph
    from .quant.frontend import graph_from_file

    with working(f"exporting the integer graph of {src}"):
        return graph_from_file(src, input_shape)


def _export(args: argparse.Namespace) -> int:
    from .compiler.graphfile import save_graph
    from .quant.frontend import graph_from_file

    src = readable_file(args.model, "model")
    out = writable_file(args.output, "-o", suffix=".npz")
    with working(f"exporting the integer graph of {src}"):
        graph = graph_from_file(src, args.input_shape)
    save_graph(graph, out)
    print(
        f"integer graph, {len(graph.layers)} nodes, input {graph.input_shape} -> {out} "
        f"(compile it, no PyTorch needed: rmsmp compile {out} -o P.rmsmp)"
    )
    return 0


def _compile(args: argparse.Namespace) -> int:
    from .compiler.lower import lower

    cfg = AccelConfig.load(args.config) if args.config else target_config(args.board)
    src = readable_file(args.model, "model")
    out = writable_file(args.output, "-o", suffix=".rmsmp")
    if _compile_tokens(args, src, cfg, out):
        return 0
    if args.host_numerics:
        raise UsageError(
            f"--host-numerics is for token models (a MiniLM checkpoint); {src} is not one, drop it"
        )
    graph = read_graph(src, args.input_shape)
    with working(f"lowering {len(graph.layers)} nodes for {cfg.name}, batch {args.batch}"):
        program = lower(graph, cfg, args.batch)
    program.save(out)
    print(program.summary() if args.summary else repr(program))
    print(f"Program -> {out} (run it with: rmsmp run {out} --input X.npy -o Y.npy)")
    return 0


def _compile_tokens(args: argparse.Namespace, src: Path, cfg: AccelConfig, out: Path) -> bool:
    """Compile a MiniLM checkpoint into a hybrid file; False for any other model file."""
    from .compiler.graphfile import is_graph_file

    if is_graph_file(src) or src.suffix != ".pt":
        return False
    import torch

    from .compiler.hybrid import lower_hybrid
    from .quant.tokenfront import TOKEN_MODELS, hybrid_from_checkpoint

    ck = torch.load(src, map_location="cpu", weights_only=False)
    if not (isinstance(ck, dict) and ck.get("model_name") in TOKEN_MODELS):
        return False
    with working(f"capturing {ck['model_name']} ({ck['method']}) at {args.tokens} tokens"):
        graph = hybrid_from_checkpoint(src, ck, args.tokens)
    with working(f"lowering {len(graph.graphs)} device ops for {cfg.name}, batch {args.batch}"):
        program = lower_hybrid(graph, cfg, args.batch, args.host_numerics or "float")
    program.save(out)
    print(graph.summary())
    print(f"lowered in {program.meta['lower_seconds']:.1f} s")
    print(
        f"hybrid Program -> {out} (run it with: rmsmp run {out} --input X.npz -o Y.npy, X.npz "
        "holding ids, mask, types as rmsmp.quant.tokenfront.encode gives them)"
    )
    return True


def _samples(args: argparse.Namespace, program) -> tuple:
    """Sample inputs (and labels) for the overlay package: ``--samples``, or CIFAR-10 test
    images for a Program that takes 3x32x32 inputs."""
    import numpy as np

    if args.samples:
        path = readable_file(args.samples, "--samples")
        try:
            data = np.load(path, allow_pickle=False)
            return data["x"], data["labels"] if "labels" in data.files else None
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(
                f"--samples {path} is not an .npz with an array 'x' ({e}); write it with "
                "np.savez(path, x=inputs, labels=classes)"
            ) from None
    if program.input_shape != (3, 32, 32):
        raise UsageError(
            f"the Program takes {program.input_shape} inputs; give sample inputs with --samples "
            "(np.savez(path, x=inputs[, labels=classes]))"
        )
    from .quant.data import cifar10_test

    return cifar10_test(args.images)


def _build(args: argparse.Namespace) -> int:
    import shutil

    from .boards import board
    from .boards.overlay import write_overlay
    from .boards.vivado import OVERLAY_DIR, run_vivado, vivado_command, write_project
    from .host.program import Program

    b = board(args.board)
    cfg = AccelConfig.load(args.config) if args.config else b.config
    out = writable_dir(args.output, "-o")
    package = out / OVERLAY_DIR
    if args.program:  # first: a Program for other hardware fails before the long generation
        program = Program.load(readable_file(args.program, "--program"))
        write_overlay(b, cfg, package, program, *_samples(args, program))
        print(f"overlay package: {package} (the Vivado run adds rmsmp.bit and rmsmp.hwh)")
    for k, p in write_project(b, cfg, out).items():
        print(f"{k}: {p}")
    print(f"config hash: {cfg.hash}")
    command = " ".join(vivado_command())
    if shutil.which("vivado") is None:
        print(
            f"vivado is not on PATH, so no bitstream was built. On a machine with Vivado run:\n"
            f"  cd {out} && {command}\nthen copy {package} to the board."
        )
        return 0
    with working(f"Vivado: {command} (synthesis, implementation, bitstream; tens of minutes)"):
        run_vivado(out)
    print(f"bitstream and hardware handoff: {package / 'rmsmp.bit'}, {package / 'rmsmp.hwh'}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .host.program import Program

    print(Program.load(readable_file(args.program, "Program")).summary())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    build_rtl(target_config(args.board))
    return demo_main(board=args.board, images=args.images)


def _quantize(args: argparse.Namespace) -> int:
    out = writable_file(args.output, "-o")
    if args.act_bits is not None and args.model != "minilm":
        raise UsageError("--act-bits is for --model minilm; ResNet methods set their own")
    if args.kd is not None and args.model == "minilm":
        raise UsageError("--kd is for --model resnet20; MiniLM QAT distils from fp32 already")
    if args.model != "minilm" and args.epochs < 1:
        raise UsageError("--epochs must be at least 1 for ResNet-20 QAT")
    if args.board is not None:
        if args.model == "minilm":
            raise UsageError("--board is for --model resnet20")
        from .quant.methods import method

        try:
            args.method = method(f"{args.method}@{args.board}").name
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        return _quantize_model(args, out)
    except KeyboardInterrupt:
        from .quant.train import finished_epochs

        done = finished_epochs(out)
        kept = (
            f"{out} keeps {done} finished epoch(s); run the same command to resume"
            if done
            else "no epoch had finished, nothing was saved"
        )
        raise RunInterruptedError(kept) from None


def _quantize_model(args: argparse.Namespace, out: Path) -> int:
    if args.model == "minilm":
        from .quant.nlp import MINILM_ACT_BITS, distill_minilm, save_minilm

        bits = args.act_bits or MINILM_ACT_BITS
        if args.epochs == 0:
            save_minilm(args.method, out, act_bits=bits)
            how = "post-training"
        else:
            size = {"n_sentences": args.train_subset} if args.train_subset else {}
            distill_minilm(args.method, args.epochs, out, act_bits=bits, **size)
            how = f"distilled for {args.epochs} epochs"
        print(f"{args.method}: MiniLM encoder Linears quantized, A{bits}, {how} -> {out}")
        return 0
    from .quant.ddp import env_rank
    from .quant.train import Distill, train

    ck = train(
        args.model,
        args.method,
        args.epochs,
        out,
        lr=args.lr,
        train_subset=args.train_subset,
        sensitivity=args.sensitivity,
        reassign_every=args.reassign_every,
        kd=None if args.kd is None else Distill(args.kd),
        step_grad_scale=args.step_grad_scale,
    )
    if env_rank():
        return 0
    print(
        f"{args.method}: top-1 {ck['history'][-1]['top1']:.2f}% after {ck['epoch']} epochs -> {out}"
    )
    return 0


def _clamp_n(n: int | None, size: Callable[[], int], what: str) -> int | None:
    """``--n`` clamped to the data set's ``size()`` (None: all of it), saying so when it
    clamps; ``size`` is only called for an ``n``."""
    if n is None or n < size():
        return n
    if n > size():
        print(f"note: --n {n} is more than the {size()} {what}; using all of them")
    return None


def _evaluate(args: argparse.Namespace) -> int:
    from .quant.train import evaluate, load_checkpoint, read_checkpoint

    path = readable_file(args.checkpoint, "checkpoint")
    ck = read_checkpoint(path)
    is_minilm = ck["model_name"] == "minilm"
    if is_minilm != (args.data == "sst2"):
        want = "--data sst2" if is_minilm else "--data cifar10 (the default)"
        raise UsageError(f"checkpoint {path} holds {ck['model_name']}; evaluate it with {want}")
    if is_minilm:
        from .quant.data import sst2
        from .quant.nlp import evaluate_checkpoint

        n = _clamp_n(args.n, lambda: len(sst2("dev")[1]), "SST-2 dev sentences")
        r = evaluate_checkpoint(ck, n_dev=n)
        where = "dev set" if n is None else f"{n} random dev sentences"
        print(
            f"{ck['method']} (MiniLM): SST-2 {where} accuracy {100 * r['q_acc']:.2f}% "
            f"(fp32 {100 * r['fp32_acc']:.2f}%), embedding cosine to fp32 {r['cosine']:.4f}"
        )
        return 0
    from .quant.data import cifar10_raw

    n = _clamp_n(args.n, lambda: len(cifar10_raw("test")[1]), "CIFAR-10 test images")
    model, ck = load_checkpoint(path)
    top1 = evaluate(model, n=n)
    where = "test set" if n is None else f"{n} random test images"
    print(
        f"{ck['method']} ({ck['model_name']}, {ck['epoch']} epochs): top-1 {top1:.2f}% "
        f"on the CIFAR-10 (JPEG copy) {where}"
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rmsmp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = _Parser(
        prog="rmsmp",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"rmsmp {_version()}")
    debug = {"action": "store_true", "help": "show the traceback of an error"}
    p.add_argument("--debug", **debug)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str):
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("--debug", **debug, default=argparse.SUPPRESS)
        c.set_defaults(func=func)
        return c

    g = command("generate", _generate, "write the accelerator's Verilog and config JSON")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--board", default="pynq-z1", help=BOARD_HELP)
    src.add_argument("--config", help="an AccelConfig JSON file instead of a board preset")
    g.add_argument("-o", "--output", required=True, help="output directory")
    g.add_argument("--lint", action="store_true", help="also lint the Verilog with Verilator")
    x = command(
        "export",
        _export,
        "write the integer graph of a QAT checkpoint or a torch.save'd float module as a file "
        "that rmsmp compile reads without PyTorch",
    )
    model_args(x, "checkpoint or torch.save(model, path) file")
    x.add_argument("-o", "--output", required=True, help="the graph .npz file to write")
    c = command(
        "compile",
        _compile,
        "compile an integer graph (from rmsmp export), a QAT checkpoint (from rmsmp quantize) "
        "or a torch.save'd float module into a .rmsmp Program: the whole network, one "
        "accelerator run per batch",
    )
    model_args(c, "graph .npz, checkpoint or torch.save(model, path) file")
    csrc = c.add_mutually_exclusive_group()
    csrc.add_argument("--board", default="pynq-z1", help=BOARD_HELP)
    csrc.add_argument("--config", help="an AccelConfig JSON file instead of a board preset")
    c.add_argument("--batch", type=int_range(1, 256), default=1, help="images per device run")
    c.add_argument("--summary", action="store_true", help="print every pass of the Program")
    c.add_argument(
        "--tokens", type=int_range(1, 128), default=128, help="token models: sequence length"
    )
    c.add_argument(
        "--host-numerics",
        choices=NUMERICS,
        help="token models: softmax, LayerNorm and GELU on the host in float32 (the default) or "
        "as I-BERT's integer approximations",
    )
    c.add_argument("-o", "--output", required=True, help="the .rmsmp file to write")
    r = command("run", _run, "run a Program on an input .npy")
    r.add_argument(
        "--host-numerics",
        choices=NUMERICS,
        help="token models: run softmax, LayerNorm and GELU in float32 or integers, whatever "
        "the file was compiled with",
    )
    r.add_argument("program")
    r.add_argument("--backend", default="golden", choices=backends.names())
    r.add_argument("--overlay", help="--backend pynq: the overlay's .bit (its .hwh beside it)")
    r.add_argument(
        "--input",
        required=True,
        help="input .npy, shaped (B, *input_shape): float (quantized with the Program's input "
        "scale) or integer (taken as already quantized)",
    )
    r.add_argument(
        "-o", "--output", required=True, help="output .npy (.npy is appended when missing)"
    )
    r.add_argument(
        "--dequantize", action="store_true", help="write float32 real values, not integers"
    )
    r.add_argument("--timeout-cycles", type=int_range(1), default=2_000_000_000)
    b = command(
        "build", _build, "write the Vivado project for a board, and run it if Vivado is here"
    )
    b.add_argument("--board", required=True, choices=sorted(BOARDS))
    b.add_argument("--config", help="an AccelConfig JSON file instead of the board's default")
    b.add_argument("-o", "--output", required=True, help="output directory")
    b.add_argument("--program", help="a compiled Program to put into the overlay package")
    b.add_argument("--samples", help="sample inputs for the package: .npz with x (and labels)")
    b.add_argument(
        "--images", type=int_range(1, 10_000), default=8, help="CIFAR-10 samples (no --samples)"
    )
    i = command("inspect", _inspect, "print a Program's layers, tiling and window use")
    i.add_argument("program")
    q = command(
        "quantize",
        _quantize,
        "quantization-aware training of a model (resumable; ResNet-20 runs data-parallel "
        "under torchrun, e.g. torchrun --nproc_per_node 2 -m rmsmp.cli quantize ...)",
    )
    q.add_argument("--model", default="resnet20", choices=("resnet20", "minilm"))
    q.add_argument("--method", default="rmsmp", choices=sorted(METHODS))
    q.add_argument(
        "--epochs",
        type=int_range(0),
        default=1,
        help="training epochs (MiniLM: 0 = post-training only); larger than a checkpoint's "
        "own extends it",
    )
    q.add_argument("--lr", type=positive_float, default=0.01)
    q.add_argument(
        "--train-subset",
        type=int_range(1),
        default=None,
        help="train on N random images (sentences for MiniLM)",
    )
    q.add_argument(
        "--act-bits",
        type=int_range(1, 8),
        default=None,
        help="MiniLM only: activation bits, 1-8 (default 8)",
    )
    q.add_argument(
        "--sensitivity",
        default="none",
        choices=("none", "hutchinson"),
        help="how 8-bit rows are chosen: quantisation error, or per-row Hessian trace",
    )
    q.add_argument(
        "--reassign-every",
        type=int_range(0),
        default=0,
        help="re-assign rows every N epochs (0: never)",
    )
    q.add_argument(
        "--kd",
        metavar="TEACHER",
        default=None,
        help="distil from TEACHER's logits: 'pretrained' (the fp32 model) or an fp32 checkpoint",
    )
    q.add_argument(
        "--board",
        default=None,
        help="ResNet-20, mixed methods: quantize at this accelerator preset's row ratio "
        "(method@board; default the method's own ratio)",
    )
    q.add_argument(
        "--step-grad-scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale the weight steps' gradients as LSQ does (default on)",
    )
    q.add_argument("-o", "--output", required=True, help="checkpoint (resumed if it exists)")
    e = command("evaluate", _evaluate, "top-1 of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data", default="cifar10", choices=("cifar10", "sst2"))
    e.add_argument(
        "--n",
        type=int_range(1),
        default=None,
        help="evaluate N random test items (more than the set: all of it)",
    )
    d = command(
        "demo",
        _demo,
        "whole ResNet-20 (our rmsmp QAT checkpoint) on CIFAR-10 images: golden and RTL, "
        "bit-exact, with accuracy and cycles",
    )
    d.add_argument("--board", default="pynq-z1", help=BOARD_HELP)
    d.add_argument("--images", type=int_range(1, 10_000), default=32, help="CIFAR-10 test images")
    return p


_OS_FIX = {
    FileNotFoundError: "check the path",
    IsADirectoryError: "give a file, not a directory",
    NotADirectoryError: "a part of the path is a file, not a directory",
    PermissionError: "check its permissions or choose another path",
    FileExistsError: "remove it or choose another path",
}


def classify(e: BaseException) -> tuple[int, str]:
    """Exit code and one-line message of an exception that ended a command."""
    from .host.errors import ProgramFormatError

    if isinstance(e, RunInterruptedError):
        return EXIT_INTERRUPTED, f"interrupted: {e}"
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
    if isinstance(e, UsageError | ProgramFormatError):
        return EXIT_USAGE, str(e)
    if isinstance(e, OSError) and e.filename is not None:
        fix = next((f for t, f in _OS_FIX.items() if isinstance(e, t)), "check the path")
        return EXIT_USAGE, f"{e.filename}: {e.strerror or e}; {fix}"
    if isinstance(e, FileNotFoundError):  # e.g. the data set, with its own message and fix
        return EXIT_USAGE, str(e)
    if isinstance(e, ValueError | TypeError):
        return EXIT_USAGE, str(e)
    if isinstance(e, RuntimeError | TimeoutError | OSError):
        return EXIT_FAILURE, str(e)
    return (
        EXIT_FAILURE,
        f"internal error {type(e).__name__}: {e}; re-run with --debug and report it",
    )


def one_line(text: str) -> str:
    """The first line of ``text``, with a pointer to --debug when there was more."""
    lines = text.strip().splitlines() or [""]
    return lines[0] if len(lines) == 1 else f"{lines[0]} (more with --debug)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rmsmp`` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors, already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as e:
        code, msg = classify(e)
        if args.debug:
            traceback.print_exc()
        print(f"rmsmp {args.cmd}: error: {one_line(msg)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
