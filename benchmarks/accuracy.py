"""Accuracy of every quantization method: ResNet-20 on CIFAR-10 (JPEG copy), MiniLM on SST-2.

Resumable and one method at a time (``--method``): each run trains into a checkpoint under
benchmarks/results/ckpt/ (resumed if present) and records its row in
benchmarks/results/accuracy.json (method, model, epochs, top-1, wall time, command). ``--kd``
distils from an fp32 teacher (row ``method+kd``). Runs under ``torchrun`` too (ResNet-20: one
replica per process; rank 0 records the row). ``--plot`` redraws
benchmarks/results/accuracy.png from the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from readme import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "accuracy.json"
LEGACY_END_INPUT_BITS = 8
"""Rows marked with this ``end_input_bits`` (shown with a dagger) were trained before an end
layer's unsigned input became 7-bit; their classifier input does not fit the accelerator."""
MODEL_TITLES = {
    "resnet20": "ResNet-20 / CIFAR-10 (JPEG copy)",
    "minilm-sst2": "MiniLM / SST-2 dev (fine-tuned)",
    "minilm": "MiniLM / SST-2 dev (probe)",
}
"""Models in the order the README table lists them."""
NO_STEP_GRAD_SCALE = "--no-step-grad-scale"
"""A row whose command carries this flag was trained without the default step-gradient scale:
it is an ablation, listed in the goal's tables but given no verdict."""


def load_rows() -> list[dict]:
    """The recorded rows (empty when there are none yet)."""
    return json.loads(JSON.read_text()) if JSON.exists() else []


def save_row(row: dict) -> None:
    """Insert or replace the row of (model, method, epochs, activation bits)."""

    def key(r: dict) -> tuple:
        return r["model"], r["method"], r["epochs"], r.get("act_bits") or 0

    rows = [r for r in load_rows() if key(r) != key(row)]
    rows.append(row)
    rows.sort(key=key)
    RESULTS.mkdir(exist_ok=True)
    JSON.write_text(json.dumps(rows, indent=1) + "\n")


def run_resnet20(
    method: str,
    epochs: int,
    lr: float,
    sensitivity: str = "none",
    reassign_every: int = 0,
    kd_teacher: str | None = None,
    split_rule: str = "error",
    step_grad_scale: bool = True,
    step_init: str = "mse",
    seed: int = 0,
) -> dict:
    """Train (resuming) and evaluate one method on ResNet-20 / CIFAR-10 (JPEG copy).

    A row-assignment option other than the default names its row ``method+option``;
    ``kd_teacher`` ("pretrained" or an fp32 checkpoint) distils from it, row ``method+kd``;
    a ``seed`` other than 0 (initial steps, batch order, augmentation) names it ``method+seedN``.
    """
    from rmsmp.quant.methods import method as method_spec
    from rmsmp.quant.train import BREVITAS_METHODS, Distill, train

    name, flags = method, ""
    base, _, preset = method.partition("@")
    at = f" --board {preset}" if preset else ""
    if sensitivity != "none":
        name, flags = f"{name}+{sensitivity}", f"{flags} --sensitivity {sensitivity}"
    if split_rule != "error":
        name, flags = f"{name}+{split_rule}", f"{flags} --split-rule {split_rule}"
    if reassign_every:
        name += f"+reassign{reassign_every}"
        flags += f" --reassign-every {reassign_every}"
    ours = method not in BREVITAS_METHODS and method_spec(method).ratio is not None
    if ours and step_grad_scale:  # train() applies it to our quantized methods only
        name, flags = f"{name}+lsqgrad", f"{flags} --step-grad-scale"
    elif ours:
        flags += f" {NO_STEP_GRAD_SCALE}"
    if step_init != "mse":
        name, flags = f"{name}+{step_init}", f"{flags} --step-init {step_init}"
    kd = None
    if kd_teacher is not None:
        kd = Distill(kd_teacher)
        name += "+kd"
        flags += f" --kd {kd_teacher}"
    if seed:
        name, flags = f"{name}+seed{seed}", f"{flags} --seed {seed}"
    ckpt = RESULTS / "ckpt" / f"resnet20-{name}-e{epochs}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ck = train(
        "resnet20",
        method,
        epochs,
        ckpt,
        lr=lr,
        sensitivity=sensitivity,
        reassign_every=reassign_every,
        kd=kd,
        split_rule=split_rule,
        step_grad_scale=step_grad_scale,
        step_init=step_init,
        seed=seed,
    )
    hist = ck["history"]
    return {
        "model": "resnet20",
        "data": "cifar10-jpeg",
        "method": name,
        "epochs": epochs,
        "top1": hist[-1]["top1"],
        "top1_per_epoch": [h["top1"] for h in hist],
        "train_seconds": sum(h["seconds"] for h in hist),
        "wall_seconds_this_call": time.perf_counter() - t0,
        "processes": ck.get("world_size", 1),
        "command": f"python benchmarks/accuracy.py --model resnet20 --method {base} "
        f"--epochs {epochs} --lr {lr}{at}{flags}",
    }


def run_minilm(method: str, epochs: int) -> dict:
    """MiniLM's encoder Linears quantized by ``method`` (distillation QAT for ``epochs``, or
    post-training at 0), scored on SST-2 dev by the fp32-trained probe."""
    from rmsmp.quant.nlp import MINILM_ACT_BITS, distill_minilm, evaluate_checkpoint, save_minilm

    if method == "fp32":
        epochs = 0
    ckpt = RESULTS / "ckpt" / f"minilm-{method}-e{epochs}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if epochs:
        ck = distill_minilm(method, epochs, ckpt)
    else:
        ck = save_minilm(method, str(ckpt))
    res = evaluate_checkpoint(ck)
    return {
        "model": "minilm",
        "data": "sst2-dev (probe)",
        "method": method,
        "epochs": epochs,
        "act_bits": None if method == "fp32" else MINILM_ACT_BITS,
        "top1": 100 * (res["fp32_acc"] if method == "fp32" else res["q_acc"]),
        "cosine_to_fp32": 1.0 if method == "fp32" else res["cosine"],
        "train_seconds": sum(h["seconds"] for h in ck["history"]),
        "wall_seconds_this_call": time.perf_counter() - t0,
        "command": f"python benchmarks/accuracy.py --model minilm --method {method} "
        f"--epochs {epochs}",
    }


def run_minilm_sst2(
    method: str, epochs: int, teacher: str | None, n_train: int | None, act_bits: int | None
) -> dict:
    """SST-2 as in GLUE: fine-tune MiniLM with a head (fp32), or QAT from the fine-tuned
    ``teacher`` checkpoint distilling from its logits (row ``method+kd``, inputs ``act_bits``
    wide: 8 unless given); dev accuracy."""
    from rmsmp.quant.glue import finetune
    from rmsmp.quant.nlp import MINILM_ACT_BITS

    size = "all" if n_train is None else str(n_train)
    bits = "" if act_bits in (None, MINILM_ACT_BITS) else f"-a{act_bits}"
    ckpt = RESULTS / "ckpt" / f"minilm-sst2-{method}{bits}-e{epochs}-n{size}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ck = finetune(method, epochs, ckpt, teacher, n_train, act_bits=act_bits or MINILM_ACT_BITS)
    flags = "" if n_train is None else f" --n-train {n_train}"
    flags += "" if teacher is None else f" --kd {teacher}"
    flags += "" if act_bits is None else f" --act-bits {act_bits}"
    return {
        "model": "minilm-sst2",
        "data": f"sst2 train ({ck['n_train']} sentences) / dev",
        "method": method if teacher is None else f"{method}+kd",
        "epochs": epochs,
        "act_bits": ck["act_bits"],
        "top1": ck["history"][-1]["dev_acc"],
        "top1_per_epoch": [h["dev_acc"] for h in ck["history"]],
        "train_seconds": sum(h["seconds"] for h in ck["history"]),
        "wall_seconds_this_call": time.perf_counter() - t0,
        "command": f"python benchmarks/accuracy.py --model minilm-sst2 --method {method} "
        f"--epochs {epochs}{flags}",
    }


def plot() -> Path:
    """Bar chart of top-1 per method and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_rows()
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(9 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sel = [r for r in rows if r["model"] == model]
        labels = [f"{r['method']} ({r['epochs']} ep)" for r in sel]
        ax.bar(labels, [r["top1"] for r in sel], color="tab:blue")
        lo = min(r["top1"] for r in sel)
        ax.set_ylim(max(0, lo - 5), min(100, max(r["top1"] for r in sel) + 3))
        ax.set_title(f"{model} ({sel[0]['data']})")
        ax.set_ylabel("top-1 (%)")
        ax.tick_params(axis="x", rotation=45)
        for i, r in enumerate(sel):
            ax.text(i, r["top1"] + 0.3, f"{r['top1']:.1f}", ha="center", fontsize=8)
    fig.tight_layout()
    out = RESULTS / "accuracy.png"
    fig.savefig(out, dpi=120)
    return out


def table() -> str:
    """The recorded rows as a text table."""
    rows = load_rows()
    lines = [f"{'model':<10}{'method':<17}{'epochs':>7}{'top-1':>8}{'train s':>9}"]
    for r in rows:
        lines.append(
            f"{r['model']:<10}{r['method']:<17}{r['epochs']:>7}{r['top1']:>8.2f}"
            f"{r['train_seconds']:>9.0f}"
        )
    return "\n".join(lines)


def markdown() -> str:
    """The recorded rows as the README's markdown table, each with the command that made it."""
    lines = ["| model / data | method | epochs | top-1 | command |", "|---|---|---|---|---|"]
    rows = load_rows()
    order = list(MODEL_TITLES)
    for r in sorted(rows, key=lambda r: (order.index(r["model"]), r["epochs"], -r["top1"])):
        method = r["method"]
        if r.get("act_bits"):
            method += f" (A{r['act_bits']})"
        if r.get("end_input_bits") == LEGACY_END_INPUT_BITS:
            method += " †"
        lines.append(
            f"| {MODEL_TITLES[r['model']]} | {method} | {r['epochs']} | {r['top1']:.2f} "
            f"| `{r['command']}` |"
        )
    return "\n".join(lines) + "\n"


GOAL_GAP = 0.5
"""The goal: one of our mixed methods within this many points of fp32 on ResNet-20."""
OUR_RIVALS = ("fixed4", "pot4")
"""The goal's other half: that mixed method ahead of these, trained with the same recipe suffix
(e.g. ``+lsqgrad``, ``+lsqgrad+seed1``), and of Brevitas (float, 8-bit ends, integer residual)
on the same schedule."""


def versus_fp32(gap: float) -> str:
    """``gap`` (fp32 minus the row, points) in words."""
    return f"{abs(gap):.2f} {'below' if gap >= 0 else 'above'} fp32"


def goal_gap(gap: float) -> str:
    """``gap`` (fp32 minus one of our mixed rows) in words, with its verdict on GOAL_GAP."""
    return f"{versus_fp32(gap)} ({'meets' if gap <= GOAL_GAP else 'misses'} the {GOAL_GAP} goal)"


def lead(d: float, rival: str) -> str:
    """``d`` (our row minus ``rival``, points) in words."""
    return f"{'ahead of' if d > 0 else 'behind'} {rival} by {abs(d):.2f}"


def judged(row: dict) -> bool:
    """Whether the goal gives ``row`` a verdict: one of our mixed methods (rmsmp*) trained with
    the default recipe."""
    return row["method"].startswith("rmsmp") and NO_STEP_GRAD_SCALE not in row.get("command", "")


def goal_at(epochs: int, rows: list[dict]) -> str:
    """The ResNet-20 goal on one schedule: every row's gap to fp32, and the verdicts for each of
    our mixed methods (rmsmp*) trained with the default recipe."""
    from rmsmp.quant.train import BREVITAS_METHODS

    sel = [r for r in rows if r["epochs"] == epochs]
    at = {r["method"]: r["top1"] for r in sel}
    fp32 = at["fp32"]
    lines = [
        f"ResNet-20 at {epochs} epochs, rows without †:",
        "",
        "| method | top-1 | vs fp32 |",
        "|---|---|---|",
    ]
    for m, t in sorted(at.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {m} | {t:.2f} | {t - fp32:+.2f} |")
    lines.append("")
    for m in sorted(r["method"] for r in sel if judged(r)):
        verdicts = [goal_gap(fp32 - at[m])]
        recipe = m[m.index("+") :] if "+" in m else ""
        for rival in (*(r + recipe for r in OUR_RIVALS), *BREVITAS_METHODS):
            if rival not in at:
                verdicts.append(f"no {epochs}-epoch {rival} row")
            else:
                verdicts.append(lead(at[m] - at[rival], rival))
        lines.append(f"- {m}: " + "; ".join(verdicts) + ".")
        if "+seed" not in m:
            lines.extend(seed_mean(m, recipe, at))
    return "\n".join(lines) + "\n"


def seeds_of(method: str, at: dict[str, float]) -> dict[int, float]:
    """Top-1 of ``method`` for each seed trained on one schedule (seed 0 is the plain row)."""
    prefix = f"{method}+seed"
    out = {0: at[method]} if method in at else {}
    out.update({int(m[len(prefix) :]): t for m, t in at.items() if m.startswith(prefix)})
    return out


def seed_mean(method: str, recipe: str, at: dict[str, float]) -> list[str]:
    """The goal over seeds: ``method``'s mean top-1 against each of our rivals (same recipe)
    trained with the same seeds; nothing where ``method`` has one seed."""
    mine = seeds_of(method, at)
    if len(mine) < 2:
        return []
    seeds = ", ".join(map(str, sorted(mine)))
    mean = sum(mine.values()) / len(mine)
    verdicts = [f"{mean:.2f}, {goal_gap(at['fp32'] - mean)}"]
    for rival in (r + recipe for r in OUR_RIVALS):
        theirs = seeds_of(rival, at)
        if theirs.keys() != mine.keys():
            verdicts.append(f"no {rival} rows for seeds {seeds}")
            continue
        d = mean - sum(theirs.values()) / len(theirs)
        per_seed = ", ".join(f"{mine[s] - theirs[s]:+.2f}" for s in sorted(mine))
        verdicts.append(f"{lead(d, rival)} (per seed {per_seed})")
    return [f"- {method}, mean of seeds {seeds}: " + "; ".join(verdicts) + "."]


def goal() -> str:
    """The ResNet-20 goal on every schedule that has an fp32 row and a mixed row of the default
    recipe, shortest first, from rows not marked legacy (†)."""
    rows = [
        r
        for r in load_rows()
        if r["model"] == "resnet20" and r.get("end_input_bits") != LEGACY_END_INPUT_BITS
    ]
    fp32 = {r["epochs"] for r in rows if r["method"] == "fp32"}
    if not fp32:
        return "No fp32 ResNet-20 row yet.\n"
    mixed = {r["epochs"] for r in rows if judged(r)}
    schedules = sorted(fp32 & mixed) or [max(fp32)]
    return "\n".join(goal_at(e, rows) for e in schedules)


SST2_GOAL_GAP = 1.0
"""The SST-2 goal: fixed4 and rmsmp (distilled) within this many dev points of fine-tuned fp32."""


def goal_sst2() -> str:
    """The SST-2 goal: each quantized row's dev gap to the fine-tuned fp32 row on the same
    training data (the longest fp32 run on it)."""
    rows = [r for r in load_rows() if r["model"] == "minilm-sst2"]
    fp32 = {}
    for r in sorted((r for r in rows if r["method"] == "fp32"), key=lambda r: r["epochs"]):
        fp32[r["data"]] = r
    if not fp32:
        return "No fine-tuned fp32 SST-2 row yet.\n"
    lines = ["SST-2 dev (MiniLM fine-tuned, GLUE protocol):", ""]
    for data, base in fp32.items():
        lines.append(f"- fp32 ({data}, {base['epochs']} epochs): {base['top1']:.2f}.")
        for r in sorted(
            (r for r in rows if r["data"] == data and r["method"] != "fp32"),
            key=lambda r: -r["top1"],
        ):
            gap = base["top1"] - r["top1"]
            verdict = "meets" if gap <= SST2_GOAL_GAP else "misses"
            lines.append(
                f"- {r['method']} (A{r['act_bits']}, {r['epochs']} epochs): {r['top1']:.2f}, "
                f"{versus_fp32(gap)} ({verdict} the {SST2_GOAL_GAP} goal)."
            )
    return "\n".join(lines) + "\n"


def update_readme() -> None:
    """Replace the README's accuracy table and goal blocks."""
    replace_block("accuracy-table", markdown())
    replace_block("accuracy-goal", goal() + "\n" + goal_sst2())


def main() -> int:
    from rmsmp.quant.assign import SPLIT_RULES
    from rmsmp.quant.ddp import env_rank
    from rmsmp.quant.methods import METHODS
    from rmsmp.quant.nlp import MINILM_ACT_BITS
    from rmsmp.quant.qat import STEP_INITS
    from rmsmp.quant.train import BREVITAS_METHODS, SENSITIVITIES

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet20", choices=sorted(MODEL_TITLES))
    p.add_argument(
        "--method",
        action="append",
        choices=[*sorted(METHODS), *BREVITAS_METHODS],
        help="method(s) to run; default: all, one after the other",
    )
    p.add_argument(
        "--board",
        default=None,
        help="ResNet-20: mixed methods at this accelerator preset's row ratio (row method@board)",
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--sensitivity",
        default="none",
        choices=SENSITIVITIES,
        help="ResNet-20: choose the 8-bit rows by per-row Hessian or Fisher trace",
    )
    p.add_argument(
        "--split-rule",
        default="error",
        choices=SPLIT_RULES,
        help="ResNet-20: split the 4-bit rows by quantisation error or the paper's variance rule",
    )
    p.add_argument("--reassign-every", type=int, default=0, help="ResNet-20: re-assign rows")
    p.add_argument(
        "--step-grad-scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ResNet-20: scale the weight steps' gradients as LSQ does (row method+lsqgrad; "
        "the default for our quantized methods)",
    )
    p.add_argument(
        "--step-init",
        default="mse",
        choices=STEP_INITS,
        help="ResNet-20: start the weight steps MSE-optimal or at abs-max (row method+absmax)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="ResNet-20: another run of the same recipe (row method+seedN; 0 is the default run)",
    )
    p.add_argument(
        "--kd",
        metavar="TEACHER",
        default=None,
        help="distil from TEACHER (row method+kd): ResNet-20 'pretrained' or an fp32 checkpoint; "
        "minilm-sst2 (needed by quantized methods) the fine-tuned fp32 checkpoint",
    )
    p.add_argument(
        "--n-train", type=int, default=None, help="minilm-sst2: train on N sentences (default all)"
    )
    p.add_argument(
        "--act-bits",
        type=int,
        choices=(4, MINILM_ACT_BITS),
        default=None,
        help=f"minilm-sst2: the quantized Linears' input bits (default {MINILM_ACT_BITS})",
    )
    p.add_argument("--plot", action="store_true", help="only redraw the plot and print the table")
    p.add_argument("--readme", action="store_true", help="also rewrite the README's table")
    args = p.parse_args()
    if args.kd is not None and args.model == "minilm":
        p.error("--kd is for --model resnet20 or minilm-sst2 (minilm distils already)")
    if args.act_bits is not None and args.model != "minilm-sst2":
        p.error("--act-bits is for --model minilm-sst2 (the other models set their own)")
    if args.seed < 0:
        p.error(f"--seed must be 0 or more, got {args.seed}")
    if args.seed and args.model != "resnet20":
        p.error("--seed is for --model resnet20")
    if args.board is not None and args.model != "resnet20":
        p.error("--board is for --model resnet20")
    if args.board is not None:
        from rmsmp.quant.methods import method as lookup

        try:
            args.method = [lookup(f"{m}@{args.board}").name for m in args.method or []]
        except ValueError as e:
            p.error(str(e))
        if not args.method:
            p.error("--board needs --method (a mixed method)")
    main_rank = env_rank() == 0
    if not args.plot:
        for m in args.method or [*METHODS, *BREVITAS_METHODS]:
            if args.model == "minilm":
                row = run_minilm(m, args.epochs)
            elif args.model == "minilm-sst2":
                row = run_minilm_sst2(m, args.epochs, args.kd, args.n_train, args.act_bits)
            else:
                row = run_resnet20(
                    m,
                    args.epochs,
                    args.lr,
                    args.sensitivity,
                    args.reassign_every,
                    args.kd,
                    args.split_rule,
                    args.step_grad_scale,
                    args.step_init,
                    args.seed,
                )
            if main_rank:
                save_row(row)
                print(table(), flush=True)
    if load_rows() and main_rank:
        print(table())
        print(f"plot: {plot()}")
        if args.readme:
            update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
