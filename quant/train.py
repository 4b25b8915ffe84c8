"""QAT / fine-tuning of ResNet-20 on CIFAR-10 (JPEG copy), with resumable checkpoints."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from .data import cifar10_raw, normalize
from .ddp import World, all_sum, from_main, init_world, shard, wrap
from .exact_qat import exact_eval
from .methods import method, prepare, reassign
from .models.resnet_cifar import load_resnet20, resnet20
from .qat import STEP_INITS, init_act_steps, init_steps_absmax, scale_step_gradients

CKPT_VERSION = 1
CKPT_KEYS = ("model_name", "method", "epochs", "epoch", "assignment", "model", "history")
BREVITAS = "brevitas"
"""Method name of the Brevitas Int4 peer baseline (not one of our presets): float ends."""
BREVITAS_8ENDS = "brevitas-8ends"
"""The Brevitas baseline with 8-bit first and last layers, as our methods have."""
BREVITAS_INT_RESIDUAL = "brevitas-8ends-intres"
"""8-bit ends and the block input quantized once for conv1 and the shortcut, as ours: the
residual stream is integer, as the accelerator needs, not float as in Brevitas' recipe."""
BREVITAS_METHODS = (BREVITAS, BREVITAS_8ENDS, BREVITAS_INT_RESIDUAL)


def progress(transient: bool = False, disable: bool = False) -> Progress:
    """The progress bar: description, bar, running loss (``info``), elapsed and remaining time.

    ``transient`` bars (evaluation, loading) are drawn on stderr and vanish when done, so the
    results on stdout stay clean; a task with ``total=None`` is a spinner. ``disable`` draws
    nothing (data-parallel replicas other than rank 0).
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
        console=Console(stderr=True) if transient else None,
        disable=disable,
    )


RUN_OPTION_DEFAULTS = {"kd": None, "step_grad_scale": False, "step_init": "mse", "seed": 0}
"""The options a run records in its checkpoint and must be resumed with, with the value a
checkpoint written before the option existed is read as."""


def checkpoint(
    model_name: str,
    method_name: str,
    epochs: int,
    epoch: int,
    assignment: dict,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    history: list[dict],
    **extra: object,
) -> dict:
    """The checkpoint dict of a run after ``epoch`` of ``epochs`` (``extra``: run-specific keys)."""
    return {
        "version": CKPT_VERSION,
        "model_name": model_name,
        "method": method_name,
        "epochs": epochs,
        "epoch": epoch,
        "assignment": assignment,
        **extra,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "history": history,
    }


def optimizer_step(
    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler | None, loss
) -> float:
    """Back-propagate ``loss``, step ``opt`` (and ``sched``); returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return float(loss.detach())


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
    device = next(model.parameters()).device
    correct = total = 0
    n_test = len(cifar10_raw("test")[1])
    size = n_test if n is None else min(n, n_test)
    with progress(transient=True) as prog:
        task = prog.add_task("evaluating on the test set", total=-(-size // batch), info="")
        for x, y in batches("test", batch, False, np.random.default_rng(0), n):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
            prog.update(task, advance=1, info=f"top-1 {100.0 * correct / total:.2f}%")
    return 100.0 * correct / total


SENSITIVITIES = ("none", "hutchinson", "fisher")
"""How the 8-bit rows are chosen: quantisation error, per-row Hessian trace, per-row Fisher."""


def row_sensitivity(model: nn.Module, kind: str) -> dict:
    """Per-row sensitivity of the float model on training images: Hutchinson Hessian traces
    (4 batches of 64, 16 probes each) or empirical Fisher traces (64 batches of 8)."""
    from .sensitivity import fisher_row_traces, hutchinson_row_traces

    size, count = (64, 4) if kind == "hutchinson" else (8, 64)
    data = list(batches("train", size, False, np.random.default_rng(2), n=size * count))
    loss = nn.CrossEntropyLoss()

    def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return loss(m(b[0]), b[1])

    if kind == "hutchinson":
        return hutchinson_row_traces(model, loss_fn, data).trace
    return fisher_row_traces(model, loss_fn, data)


def build(
    model_name: str,
    method_name: str,
    assignment: dict | None = None,
    sensitivity: str = "none",
    split_rule: str = "error",
) -> tuple[nn.Module, dict]:
    """The pretrained model, prepared for a method (assignment reused when given).

    ``sensitivity`` "hutchinson" or "fisher" assigns the 8-bit rows by per-row Hessian or
    Fisher trace (``assign_rmsmp``); "none" by quantisation error. ``split_rule`` "variance"
    splits the 4-bit rows by the paper's normalised-variance rule instead of by error.
    ``BREVITAS_METHODS`` build the peer baseline instead (float or 8-bit ends; float or integer
    residual stream), its activation ranges calibrated on a few training batches as Brevitas
    recommends.
    """
    if model_name != "resnet20":
        raise ValueError(f"training supports --model resnet20 for now, got {model_name!r}")
    calib, _ = next(batches("train", 256, False, np.random.default_rng(0)))
    if method_name in BREVITAS_METHODS:
        from brevitas.graph.calibrate import calibration_mode

        from .brevitas_baseline import brevitas_resnet20

        model = brevitas_resnet20(
            eight_bit_ends=method_name != BREVITAS,
            integer_residual=method_name == BREVITAS_INT_RESIDUAL,
        ).eval()
        with torch.no_grad(), calibration_mode(model):
            for x, _ in batches("train", 256, False, np.random.default_rng(1), n=1024):
                model(x)
        return model, {}
    m = method(method_name)
    model = load_resnet20() if assignment is None else resnet20()
    model.eval()
    if sensitivity not in SENSITIVITIES:
        raise ValueError(f"sensitivity must be one of {SENSITIVITIES}, got {sensitivity!r}")
    sens = None
    if sensitivity != "none" and assignment is None:
        sens = row_sensitivity(model, sensitivity)
    assignment = prepare(model, m, calib, assignment, sens, split_rule)
    return (model if m.ratio is None else exact_eval(model)), assignment


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


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation from a float teacher's logits, for every method alike.

    The loss is ``(1 - weight) * CE(student, labels) + weight * T^2 * KL(teacher || student)``,
    both logits softened by the temperature ``T``; the defaults (equal weights, T = 1) are LSQ's.
    ``teacher`` is "pretrained" (the fp32 ResNet-20 every method starts from) or the path of a
    checkpoint (e.g. the fine-tuned fp32 one).
    """

    teacher: str = "pretrained"
    weight: float = 0.5
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.weight <= 1:
            raise ValueError(f"distillation weight must be in (0, 1], got {self.weight}")
        if not self.temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {self.temperature}")

    def load_teacher(self) -> nn.Module:
        """The teacher, in eval mode."""
        if self.teacher == "pretrained":
            return load_resnet20()
        return load_checkpoint(self.teacher)[0].eval()

    def loss(self, logits: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distillation loss of a batch (``teacher``: the teacher's logits)."""
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(logits / t, 1),
            F.log_softmax(teacher / t, 1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.weight) * F.cross_entropy(logits, y) + self.weight * t * t * soft


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""The training loss of a network on a batch (inputs, labels)."""


def objective(kd: Distill | None, device: torch.device) -> Objective:
    """Cross-entropy, or ``kd``'s distillation loss against its teacher (loaded onto ``device``)."""
    if kd is None:
        return lambda net, x, y: F.cross_entropy(net(x), y)
    teacher = kd.load_teacher().to(device, memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)

    def distill(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        return kd.loss(net(x), t, y)

    return distill


def run_epoch(
    model: nn.Module,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_of: Objective,
    world: World,
    on_step: Callable[[float], None] | None = None,
) -> float:
    """One epoch of ``net`` (``model``, or its DDP wrapper) on ``data``'s global batches.

    Each replica steps on its slice of every batch (DDP averages the gradients, so with equal
    slices a step is the one-process step on the whole batch); a batch smaller than the world
    is skipped by all. ``on_step`` gets this replica's running loss. Returns the mean loss over
    every replica's samples.
    """
    model.train()
    tl = total = 0.0
    for x, y in data:
        if len(y) < world.size:
            continue
        xs, ys = shard(world, x, y)
        tl += optimizer_step(opt, sched, loss_of(net, xs, ys)) * len(ys)
        total += len(ys)
        if on_step is not None:
            on_step(tl / total)
    tl, total = all_sum(world, tl, total)
    return tl / total


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
    kd: Distill | None = None,
    split_rule: str = "error",
    step_grad_scale: bool = True,
    step_init: str = "mse",
) -> dict:
    """Fine-tune (fp32) or QAT-train for ``epochs``; resumes from ``out`` if it exists.

    Returns the checkpoint dict (with ``history``: per-epoch loss, top-1 and seconds).
    ``reassign_every`` > 0 re-assigns the rows from the current weights every that many epochs,
    as RMSMP does (the paper: every 10). ``sensitivity`` and ``split_rule`` choose the rows'
    formats (see ``build``); ``step_grad_scale`` (the default: it gained 0.8-1.1 points on
    every method measured) scales the weight steps' gradients as LSQ does
    (``RowQuantizer.scale_step_gradient``; it applies to our quantized methods only, and is
    recorded off for fp32 and Brevitas); ``step_init`` starts them MSE-optimal or at abs-max
    (``qat.STEP_INITS``). ``kd`` distils from a float teacher. Under torchrun
    every process trains a replica on its slice of each batch of ``batch`` (see ``ddp``); rank 0
    evaluates and writes the checkpoint, and every rank returns it.
    """
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out)
    if method_name not in BREVITAS_METHODS:
        step_grad_scale = step_grad_scale and method(method_name).ratio is not None
    elif reassign_every:
        raise ValueError(f"--reassign-every is for our methods, not {method_name}")
    else:
        step_grad_scale = False
    if step_init not in STEP_INITS:
        raise ValueError(f"step init must be one of {', '.join(STEP_INITS)}, got {step_init!r}")
    if train_subset is not None:
        if train_subset < 1:
            raise ValueError(f"--train-subset must be at least 1, got {train_subset}")
        n_train = len(cifar10_raw("train")[1])
        if train_subset >= n_train:
            print(f"note: --train-subset {train_subset} covers all {n_train} training images")
            train_subset = None
    world = init_world()
    torch.manual_seed(seed)
    ck = None
    same_run = False
    kd_options = None if kd is None else asdict(kd)
    values = (kd_options, step_grad_scale, step_init, seed)
    options = dict(zip(RUN_OPTION_DEFAULTS, values, strict=True))
    if out.exists():
        model, ck = load_checkpoint(out)
        if ck["method"] != method_name or ck["model_name"] != model_name:
            raise ValueError(
                f"{out} holds {ck['model_name']} method {ck['method']}; "
                "use another -o to start a different run"
            )
        theirs = {k: ck.get(k, v) for k, v in RUN_OPTION_DEFAULTS.items()}
        if theirs != options:
            raise ValueError(
                f"{out} was trained with distillation, step-gradient scale, step init and seed "
                f"{tuple(theirs.values())}, not {tuple(options.values())}; "
                "pass the same options to resume it, or use another -o"
            )
        same_run = restore_schedule(ck, epochs, out)
        assignment = ck["assignment"]
    else:
        model, assignment = build(model_name, method_name, None, sensitivity, split_rule)
        if step_init == "absmax":
            init_steps_absmax(model)
    if step_grad_scale:
        scale_step_gradients(model)
    # channels_last: oneDNN's convolutions run about 17% faster per step on these CPUs.
    model.to(world.device, memory_format=torch.channels_last)
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
    loss_of = objective(kd, world.device)
    net = None
    for epoch in range(start, epochs):
        if reassign_every and epoch and epoch % reassign_every == 0:
            assignment = reassign(model, method(method_name))
        rng = np.random.default_rng(seed * 1000 + epoch)
        t0 = time.perf_counter()
        # channels_last for training steps only: evaluation and export keep NCHW's float order.
        data = (
            (x.contiguous(memory_format=torch.channels_last), y)
            for x, y in batches("train", batch, True, rng, train_subset)
        )
        first = next(data)
        if net is None:
            model.train()
            init_act_steps(model, first[0].to(world.device))
            net = wrap(model, world)
        with progress(disable=not world.main) as prog:
            task = prog.add_task(
                f"{method_name} epoch {epoch + 1}/{epochs}", total=per_epoch, info=""
            )
            loss = run_epoch(
                model,
                net,
                opt,
                sched,
                itertools.chain([first], data),
                loss_of,
                world,
                lambda tl, t=task: prog.update(t, advance=1, info=f"loss {tl:.3f}"),
            )
        top1 = from_main(world, evaluate(model) if world.main else 0.0)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": loss,
                "top1": top1,
                "seconds": time.perf_counter() - t0,
            }
        )
        ck = checkpoint(
            model_name,
            method_name,
            epochs,
            epoch + 1,
            assignment,
            model,
            opt,
            sched,
            history,
            **options,
            world_size=world.size,
        )
        if world.main:
            save_checkpoint(ck, out)
            print(f"epoch {epoch + 1}: loss {loss:.4f}, top-1 {top1:.2f}%")
    return ck
