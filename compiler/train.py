"""QAT / fine-tuning of ResNet-20 on CIFAR-10 (JPEG copy), with resumable checkpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from .data import cifar10_raw, normalize
from .methods import method, prepare, reassign
from .models.resnet_cifar import load_resnet20, resnet20

CKPT_VERSION = 1
CKPT_KEYS = ("model_name", "method", "epochs", "epoch", "assignment", "model", "history")
BREVITAS = "brevitas"
"""Method name of the Brevitas Int4 peer baseline (not one of our presets)."""


def progress(transient: bool = False) -> Progress:
    """The progress bar: description, bar, running loss (``info``), elapsed and remaining time.

    ``transient`` bars (evaluation, loading) are drawn on stderr and vanish when done, so the
    results on stdout stay clean; a task with ``total=None`` is a spinner.
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
        console=Console(stderr=True) if transient else None,
    )


def save_checkpoint(ck: dict, out: Path) -> None:
    """Write ``ck`` to ``out`` atomically, so an interrupted run never leaves half a file."""
    tmp = out.with_suffix(".tmp")
    torch.save(ck, tmp)
    tmp.replace(out)


def batches(
    split: str, batch: int, train: bool, rng: np.random.Generator, n: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised CIFAR-10 batches; training batches are shuffled, padded-cropped and flipped."""
    images, labels = cifar10_raw(split)
    idx = rng.permutation(len(labels)) if train or n is not None else np.arange(len(labels))
    if n is not None:
        idx = idx[:n]
    for i in range(0, len(idx), batch):
        sel = idx[i : i + batch]
        x = images[sel]
        if train:
            pad = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
            ox, oy = rng.integers(0, 9, size=2)
            x = pad[:, oy : oy + 32, ox : ox + 32]
            flip = rng.random(len(sel)) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        yield torch.from_numpy(normalize(x)), torch.from_numpy(labels[sel].astype(np.int64))


@torch.no_grad()
def evaluate(model: nn.Module, n: int | None = None, batch: int = 500) -> float:
    """Top-1 (%) on the CIFAR-10 (JPEG copy) test split, or on a fixed random ``n`` of it."""
    if n is not None and n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    model.eval()
    correct = total = 0
    n_test = len(cifar10_raw("test")[1])
    size = n_test if n is None else min(n, n_test)
    with progress(transient=True) as prog:
        task = prog.add_task("evaluating on the test set", total=-(-size // batch), info="")
        for x, y in batches("test", batch, False, np.random.default_rng(0), n):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
            prog.update(task, advance=1, info=f"top-1 {100.0 * correct / total:.2f}%")
    return 100.0 * correct / total


def row_sensitivity(model: nn.Module, n_batches: int = 4) -> dict:
    """Per-row Hutchinson Hessian traces of the float model on a few training batches."""
    from .sensitivity import hutchinson_row_traces

    data = list(batches("train", 64, False, np.random.default_rng(2), n=64 * n_batches))
    loss = nn.CrossEntropyLoss()
    return hutchinson_row_traces(model, lambda m, b: loss(m(b[0]), b[1]), data).trace


def build(
    model_name: str,
    method_name: str,
    assignment: dict | None = None,
    sensitivity: str = "none",
) -> tuple[nn.Module, dict]:
    """The pretrained model, prepared for a method (assignment reused when given).

    ``sensitivity="hutchinson"`` assigns the 8-bit rows by per-row Hessian trace
    (``assign_rmsmp``); "none" by quantisation error. ``BREVITAS`` builds the peer baseline
    instead, its activation ranges calibrated on a few training batches as Brevitas recommends.
    """
    if model_name != "resnet20":
        raise ValueError(f"training supports --model resnet20 for now, got {model_name!r}")
    calib, _ = next(batches("train", 256, False, np.random.default_rng(0)))
    if method_name == BREVITAS:
        from brevitas.graph.calibrate import calibration_mode

        from .brevitas_baseline import brevitas_resnet20

        model = brevitas_resnet20().eval()
        with torch.no_grad(), calibration_mode(model):
            for x, _ in batches("train", 256, False, np.random.default_rng(1), n=1024):
                model(x)
        return model, {}
    m = method(method_name)
    model = load_resnet20() if assignment is None else resnet20()
    model.eval()
    if sensitivity not in ("none", "hutchinson"):
        raise ValueError(f"sensitivity must be 'none' or 'hutchinson', got {sensitivity!r}")
    sens = row_sensitivity(model) if sensitivity == "hutchinson" and assignment is None else None
    return model, prepare(model, m, calib, assignment, sensitivity=sens)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of ``rmsmp quantize`` at ``path``; ValueError naming the file for
    anything else (OSError, e.g. a missing file, passes through with its filename)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except OSError:
        raise
    except Exception as e:  # a foreign file fails inside unpickling in many ways
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"checkpoint {path} cannot be read ({first}); give a file written by rmsmp quantize"
        ) from None
    if not isinstance(ck, dict) or ck.get("version") != CKPT_VERSION:
        raise ValueError(
            f"{path} is not an rmsmp checkpoint (version {CKPT_VERSION}); re-run rmsmp quantize"
        )
    missing = [k for k in CKPT_KEYS if k not in ck]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; re-run rmsmp quantize")
    return ck


def finished_epochs(path: str | Path) -> int:
    """Epochs the checkpoint at ``path`` holds; 0 when there is none or it cannot be read."""
    try:
        return int(read_checkpoint(path)["epoch"])
    except (OSError, ValueError):
        return 0


def restore_schedule(ck: dict, epochs: int, out: Path) -> bool:
    """Resuming ``ck`` for ``epochs``: True to continue its learning-rate schedule (the same
    run), False to start a new one over the added epochs (``epochs`` beyond the checkpoint's own
    extends it); ValueError for fewer epochs than it was started for."""
    if epochs == ck["epochs"]:
        return True
    if epochs > ck["epochs"]:
        print(
            f"extending {out} from {ck['epochs']} to {epochs} epochs "
            f"(a new learning-rate cycle over epochs {ck['epoch'] + 1}-{epochs})"
        )
        return False
    raise ValueError(
        f"{out} was started for {ck['epochs']} epochs ({ck['epoch']} done); pass --epochs "
        f"{ck['epochs']} to resume it, a larger number to extend it, or use another -o"
    )


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """A trained model and its checkpoint dict; clear errors for a file that is not one."""
    ck = read_checkpoint(path)
    model, _ = build(ck["model_name"], ck["method"], ck["assignment"])
    model.load_state_dict(ck["model"])
    return model, ck


def train(
    model_name: str,
    method_name: str,
    epochs: int,
    out: str | Path,
    lr: float = 0.01,
    batch: int = 128,
    train_subset: int | None = None,
    seed: int = 0,
    sensitivity: str = "none",
    reassign_every: int = 0,
) -> dict:
    """Fine-tune (fp32) or QAT-train for ``epochs``; resumes from ``out`` if it exists.

    Returns the checkpoint dict (with ``history``: per-epoch loss, top-1 and seconds).
    ``reassign_every`` > 0 re-assigns the rows from the current weights every that many epochs,
    as RMSMP does (the paper: every 10).
    """
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out)
    if method_name != BREVITAS:
        method(method_name)
    if train_subset is not None:
        if train_subset < 1:
            raise ValueError(f"--train-subset must be at least 1, got {train_subset}")
        n_train = len(cifar10_raw("train")[1])
        if train_subset >= n_train:
            print(f"note: --train-subset {train_subset} covers all {n_train} training images")
            train_subset = None
    torch.manual_seed(seed)
    ck = None
    same_run = False
    if out.exists():
        model, ck = load_checkpoint(out)
        if ck["method"] != method_name or ck["model_name"] != model_name:
            raise ValueError(
                f"{out} holds {ck['model_name']} method {ck['method']}; "
                "use another -o to start a different run"
            )
        same_run = restore_schedule(ck, epochs, out)
        assignment = ck["assignment"]
    else:
        model, assignment = build(model_name, method_name, sensitivity=sensitivity)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    per_epoch = -(-(train_subset or 50_000) // batch)
    history = []
    start = 0
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        history, start = ck["history"], ck["epoch"]
    # An extension's cycle covers only the added epochs; a resumed run's state replaces this one.
    steps = max(epochs - start, 1) * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    if same_run:
        sched.load_state_dict(ck["scheduler"])
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, epochs):
        if reassign_every and epoch and epoch % reassign_every == 0 and method_name != BREVITAS:
            assignment = reassign(model, method(method_name))
        model.train()
        rng = np.random.default_rng(seed * 1000 + epoch)
        t0 = time.perf_counter()
        total = tl = 0.0
        with progress() as prog:
            task = prog.add_task(
                f"{method_name} epoch {epoch + 1}/{epochs}", total=per_epoch, info=""
            )
            for x, y in batches("train", batch, True, rng, train_subset):
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tl += float(loss.detach()) * len(y)
                total += len(y)
                prog.update(task, advance=1, info=f"loss {tl / total:.3f}")
        top1 = evaluate(model)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": tl / total,
                "top1": top1,
                "seconds": time.perf_counter() - t0,
            }
        )
        ck = {
            "version": CKPT_VERSION,
            "model_name": model_name,
            "method": method_name,
            "epochs": epochs,
            "epoch": epoch + 1,
            "assignment": assignment,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history,
        }
        save_checkpoint(ck, out)
        print(f"epoch {epoch + 1}: loss {tl / total:.4f}, top-1 {top1:.2f}%")
    return ck
