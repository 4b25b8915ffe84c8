"""The ``rmsmp`` command line: generate hardware, run a Program, run the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .arch import PRESETS, AccelConfig, ConfigError
from .compiler.methods import METHODS


def _generate(args: argparse.Namespace) -> int:
    from .hw.generate import generate

    cfg = (
        AccelConfig.from_json(Path(args.config).read_text())
        if args.config
        else (AccelConfig.for_board(args.board))
    )
    paths = generate(cfg, Path(args.output))
    if args.lint:
        from .sim.verilator import lint

        lint(paths["verilog"])
        print("verilator lint: no errors")
    for k, p in paths.items():
        print(f"{k}: {p}")
    print(f"config hash: {cfg.hash}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .host.program import Program
    from .host.runtime import run_with_stats

    program = Program.load(args.program)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read input {args.input!r} as a .npy array: {e}") from None
    res = run_with_stats(program, x, backend=args.backend, timeout_cycles=args.timeout_cycles)
    np.save(args.output, res.output)
    print(f"output {res.output.shape} {res.output.dtype} -> {args.output}")
    if args.backend == "rtl":
        print(f"cycles: {res.total_cycles} (MAC array busy {res.mac_cycles})")
    for step, where in res.placement:
        print(f"  {where:>6}  {step}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(board=args.board, images=args.images)


def _quantize(args: argparse.Namespace) -> int:
    if args.model == "minilm":
        from .compiler.nlp import MINILM_ACT_BITS, distill_minilm, save_minilm

        bits = args.act_bits or MINILM_ACT_BITS
        if args.epochs == 0:
            save_minilm(args.method, args.output, act_bits=bits)
            how = "post-training"
        else:
            size = {"n_sentences": args.train_subset} if args.train_subset else {}
            distill_minilm(args.method, args.epochs, args.output, act_bits=bits, **size)
            how = f"distilled for {args.epochs} epochs"
        print(f"{args.method}: MiniLM encoder Linears quantized, A{bits}, {how} -> {args.output}")
        return 0
    if args.act_bits is not None:
        raise ValueError("--act-bits is for --model minilm; ResNet methods set their own")
    from .compiler.train import train

    ck = train(
        args.model,
        args.method,
        args.epochs,
        args.output,
        lr=args.lr,
        train_subset=args.train_subset,
        sensitivity=args.sensitivity,
        reassign_every=args.reassign_every,
    )
    print(
        f"{args.method}: top-1 {ck['history'][-1]['top1']:.2f}% after {ck['epoch']} epochs "
        f"-> {args.output}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .compiler.train import CKPT_VERSION, evaluate, load_checkpoint

    if args.data == "sst2":
        from .compiler.nlp import evaluate_checkpoint

        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        if (
            not isinstance(ck, dict)
            or ck.get("version") != CKPT_VERSION
            or (ck.get("model_name") != "minilm")
        ):
            raise ValueError(f"{args.checkpoint} is not a MiniLM checkpoint of rmsmp quantize")
        r = evaluate_checkpoint(ck)
        print(
            f"{ck['method']} (MiniLM): SST-2 dev accuracy {100 * r['q_acc']:.2f}% "
            f"(fp32 {100 * r['fp32_acc']:.2f}%), embedding cosine to fp32 {r['cosine']:.4f}"
        )
        return 0
    model, ck = load_checkpoint(args.checkpoint)
    top1 = evaluate(model, n=args.n)
    where = "test set" if args.n is None else f"{args.n} random test images"
    print(
        f"{ck['method']} ({ck['model_name']}, {ck['epoch']} epochs): top-1 {top1:.2f}% "
        f"on the CIFAR-10 (JPEG copy) {where}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="rmsmp", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write the accelerator's Verilog and config JSON")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--board", default="pynq-z1", choices=sorted(PRESETS))
    src.add_argument("--config", help="an AccelConfig JSON file instead of a board preset")
    g.add_argument("-o", "--output", required=True, help="output directory")
    g.add_argument("--lint", action="store_true", help="also lint the Verilog with Verilator")
    g.set_defaults(func=_generate)
    r = sub.add_parser("run", help="run a Program on an input .npy")
    r.add_argument("program")
    r.add_argument("--backend", default="golden", choices=("golden", "rtl"))
    r.add_argument("--input", required=True, help="input .npy, shaped (B, *input_shape)")
    r.add_argument("-o", "--output", required=True, help="where to write the output .npy")
    r.add_argument("--timeout-cycles", type=int, default=2_000_000_000)
    r.set_defaults(func=_run)
    q = sub.add_parser("quantize", help="quantization-aware training of a model (resumable)")
    q.add_argument("--model", default="resnet20", choices=("resnet20", "minilm"))
    q.add_argument("--method", default="rmsmp", choices=sorted(METHODS))
    q.add_argument(
        "--epochs", type=int, default=1, help="training epochs (MiniLM: 0 = post-training only)"
    )
    q.add_argument("--lr", type=float, default=0.01)
    q.add_argument(
        "--train-subset", type=int, default=None, help="train on N random images (sentences)"
    )
    q.add_argument(
        "--act-bits", type=int, default=None, help="MiniLM only: activation bits (default 8)"
    )
    q.add_argument(
        "--sensitivity",
        default="none",
        choices=("none", "hutchinson"),
        help="how 8-bit rows are chosen: quantisation error, or per-row Hessian trace",
    )
    q.add_argument(
        "--reassign-every", type=int, default=0, help="re-assign rows every N epochs (0: never)"
    )
    q.add_argument("-o", "--output", required=True, help="checkpoint (resumed if it exists)")
    q.set_defaults(func=_quantize)
    e = sub.add_parser("evaluate", help="top-1 of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data", default="cifar10", choices=("cifar10", "sst2"))
    e.add_argument("--n", type=int, default=None, help="evaluate N random test images")
    e.set_defaults(func=_evaluate)
    d = sub.add_parser("demo", help="ResNet-20's first conv layers: quantize, compile, run on RTL")
    d.add_argument("--board", default="pynq-z1", choices=sorted(PRESETS))
    d.add_argument("--images", type=int, default=4, help="CIFAR-10 test images to run")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rmsmp`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, TypeError, TimeoutError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
