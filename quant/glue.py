"""SST-2 as in GLUE: MiniLM fine-tuned with a classification head, scored by dev accuracy.

fp32: all-MiniLM-L6-v2 with a head (dropout 0.1, then a Linear 384 -> 2 on the attention-mask
mean of the last hidden state, the pooling this sentence encoder was trained with) fine-tuned end
to end on SST-2 train with cross-entropy: AdamW, lr 2e-5, batch 32, linear warm-up over the first
10% and decay, as in BERT's GLUE recipe. QAT starts from that fine-tuned model: its encoder
Linears are quantized by a method (A8, as ``nlp``; the 2 x 384 head stays float) and trained on
the same split, distilling from the fine-tuned fp32 model's logits (``train.Distill``'s loss).
Every run is resumable per epoch; ``n_train`` trains on a seeded subset of the split.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from .data import sst2
from .methods import method, prepare
from .models.minilm import load_minilm
from .nlp import MINILM_ACT_BITS, _batch, minilm_method
from .train import (
    Distill,
    checkpoint,
    optimizer_step,
    progress,
    read_checkpoint,
    restore_schedule,
    save_checkpoint,
)

MODEL_NAME = "minilm-sst2"
LR = 2e-5
QAT_LR = 2e-5
BATCH = 32


class SentenceClassifier(nn.Module):
    """An encoder, mean-pooled over real tokens, then dropout and a linear head."""

    def __init__(self, encoder: nn.Module, classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(ids, mask, types)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return self.head(self.dropout(pooled))


def classifier(
    method_name: str,
    assignment: dict | None = None,
    start: dict | None = None,
    act_bits: int = MINILM_ACT_BITS,
) -> tuple[SentenceClassifier, dict]:
    """The pretrained encoder with a fresh head, or the classifier state ``start``; then its
    encoder Linears quantized by ``method_name`` with ``act_bits``-bit inputs (rows assigned
    afresh unless ``assignment`` is given, steps set from 256 train sentences; fp32: float)."""
    torch.manual_seed(0)
    encoder, tok = load_minilm()
    model = SentenceClassifier(encoder)
    if start is not None:
        model.load_state_dict(start)
    if method(method_name).ratio is None:
        return model, {}
    calib = _batch(tok, sst2("train", 256, 1)[0])
    m = minilm_method(method_name, act_bits)
    assignment = prepare(encoder, m, calib, assignment)
    encoder.eval()
    with torch.no_grad():
        encoder(*calib)
    return model, assignment


@torch.no_grad()
def dev_accuracy(model: nn.Module, tok, n: int | None = None) -> float:
    """Accuracy (%) on SST-2 dev (or a seeded ``n`` of it)."""
    sentences, labels = sst2("dev", n)
    model.eval()
    correct = 0
    for i in range(0, len(sentences), 64):
        logits = model(*_batch(tok, sentences[i : i + 64]))
        correct += int((logits.argmax(1).numpy() == labels[i : i + 64]).sum())
    return 100.0 * correct / len(sentences)


def finetune(
    method_name: str,
    epochs: int,
    out: str | Path,
    teacher: str | Path | None = None,
    n_train: int | None = None,
    n_dev: int | None = None,
    seed: int = 0,
    act_bits: int = MINILM_ACT_BITS,
) -> dict:
    """Fine-tune (fp32) or QAT-train the SST-2 classifier for ``epochs``; resumes from ``out``.

    A quantized method needs ``teacher``, the fine-tuned fp32 checkpoint: the student starts
    from its weights and distils from its logits; ``act_bits`` is its Linears' input width (W4A8 by
    default, or W4A4). Returns the checkpoint dict (``history``:
    per-epoch loss, dev accuracy, seconds).
    """
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    quantized = method(method_name).ratio is not None
    if quantized and teacher is None:
        raise ValueError(
            f"{method_name} starts from the fine-tuned fp32 model: pass its checkpoint as teacher"
        )
    out = Path(out)
    ck = read_checkpoint(out) if out.exists() else None
    bits = act_bits if quantized else None
    if ck is not None and (ck["model_name"], ck["method"], ck.get("act_bits")) != (
        MODEL_NAME,
        method_name,
        bits,
    ):
        raise ValueError(
            f"{out} holds {ck['model_name']} {ck['method']} at A{ck.get('act_bits')}; "
            "use another -o"
        )
    kd, teach = None, None
    if quantized:
        teach, _ = classifier("fp32", start=read_checkpoint(teacher)["model"])
        teach.eval()
        kd = Distill(str(teacher))
    model, assignment = classifier(
        method_name,
        None if ck is None else ck["assignment"],
        None if teach is None else teach.state_dict(),
        act_bits,
    )
    _, tok = load_minilm()
    lr = QAT_LR if quantized else LR
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sentences, labels = sst2("train", n_train, seed)
    per_epoch = -(-len(sentences) // BATCH)
    same_run, start, history = False, 0, []
    if ck is not None:
        same_run = restore_schedule(ck, epochs, out)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, history = ck["epoch"], ck["history"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        lr,
        total_steps=max(epochs - start, 1) * per_epoch,
        pct_start=0.1,
        anneal_strategy="linear",
    )
    if same_run:
        sched.load_state_dict(ck["scheduler"])
    for epoch in range(start, epochs):
        order = np.random.default_rng(seed * 1000 + epoch).permutation(len(sentences))
        model.train()
        t0, total = time.perf_counter(), 0.0
        with progress() as prog:
            task = prog.add_task(
                f"sst2 {method_name} epoch {epoch + 1}/{epochs}", total=per_epoch, info=""
            )
            for step, i in enumerate(range(0, len(order), BATCH), start=1):
                idx = order[i : i + BATCH]
                x = _batch(tok, [sentences[j] for j in idx])
                y = torch.from_numpy(labels[idx])
                logits = model(*x)
                if kd is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    with torch.no_grad():
                        target = teach(*x)
                    loss = kd.loss(logits, target, y)
                total += optimizer_step(opt, sched, loss)
                prog.update(task, advance=1, info=f"loss {total / step:.4f}")
        acc = dev_accuracy(model, tok, n_dev)
        history = [
            *history,
            {
                "epoch": epoch + 1,
                "loss": total / per_epoch,
                "dev_acc": acc,
                "seconds": time.perf_counter() - t0,
            },
        ]
        ck = checkpoint(
            MODEL_NAME,
            method_name,
            epochs,
            epoch + 1,
            assignment,
            model,
            opt,
            sched,
            history,
            act_bits=bits,
            kd=None if kd is None else dataclasses.asdict(kd),
            n_train=len(sentences),
        )
        save_checkpoint(ck, out)
        print(f"epoch {epoch + 1}: loss {total / per_epoch:.4f}, SST-2 dev {acc:.2f}%")
    return ck
