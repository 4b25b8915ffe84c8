"""MiniLM on SST-2: quantize every encoder Linear with a method, score it with the probe.

Embeddings, softmax and LayerNorm stay float; the 36 encoder ``nn.Linear`` layers are quantized
row by row like any other model's (``methods.prepare``), activations calibrated on SST-2 train
sentences. Accuracy is that of a logistic-regression probe trained on fp32 embeddings.

QAT (``distill_minilm``) is label-free distillation from the fp32 encoder, as in TernaryBERT /
BinaryBERT: on SST-2 train sentences the quantized encoder learns to reproduce every layer's
hidden states (masked MSE, normalised by the teacher's mean square) and the sentence embedding
(MSE in units of each feature's std, as the probe standardises its features). Only the quantized
Linears learn. No labels are used, so the probe protocol is unchanged.

Activations into the encoder Linears are 8-bit by default (``MINILM_ACT_BITS``), as in Q-BERT
and TernaryBERT: BERT's LayerNorm and GELU outputs have outliers that 4 bits cannot hold. Measured
post-training on SST-2 dev, Fixed-W4A4 keeps 71.7% (cosine 0.56) against 78.2% (cosine 0.88) for
W4A8; the fp32 encoder scores 80.2%. The weight formats and ratios are the method's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from .data import sst2
from .methods import Method, method, prepare
from .models.minilm import embed, load_minilm, sentence_embedding
from .probe import DEFAULT_N_TRAIN, sst2_eval
from .train import (
    CKPT_VERSION,
    optimizer_step,
    progress,
    read_checkpoint,
    restore_schedule,
    save_checkpoint,
)

CALIB_SENTENCES = 256
# Distillation set: a seeded subset of SST-2 train sentences (no labels). One learning rate for
# weights, biases and steps; it was picked on the train-set distillation loss (a 1,024-sentence
# fixed4 epoch took it from 0.94 to 0.51, and the dev accuracy from 78.2% to 78.9%).
DISTILL_SENTENCES = 2000
DISTILL_SEED = 7
DISTILL_MIN_WORDS = 10
DISTILL_LR = 5e-5
MINILM_ACT_BITS = 8


def _batch(tokenizer, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tokenizer.encode_batch(sentences)
    width = max(sum(e.attention_mask) for e in enc)
    ids = torch.tensor([e.ids[:width] for e in enc])
    mask = torch.tensor([e.attention_mask[:width] for e in enc])
    types = torch.tensor([e.type_ids[:width] for e in enc])
    return ids, mask, types


def minilm_method(method_name: str, act_bits: int = MINILM_ACT_BITS) -> Method:
    """``method_name``'s weight formats with MiniLM's activation width."""
    return dataclasses.replace(method(method_name), act_bits=act_bits)


def quantize_minilm(
    method_name: str,
    seed: int = 0,
    act_bits: int = MINILM_ACT_BITS,
    assignment: dict[str, list[str]] | None = None,
    keep_ends: bool = True,
) -> tuple[torch.nn.Module, dict]:
    """MiniLM with every encoder Linear quantized by ``method_name`` (post-training); rows are
    assigned afresh unless ``assignment`` (from a checkpoint) is given. ``keep_ends=False``
    gives the first and last Linear the method's rows too (``Method.keep_ends``)."""
    model, tok = load_minilm()
    sentences, _ = sst2("train", CALIB_SENTENCES, seed + 1)
    calib = _batch(tok, sentences)
    m = dataclasses.replace(minilm_method(method_name, act_bits), keep_ends=keep_ends)
    # The activation steps start from a random sample of each input (``ActQuantizer``): seeded
    # here, so the same call quantizes the same way, and the caller's random stream is untouched.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        assignment = prepare(model, m, calib, assignment)
        model.eval()
        with torch.no_grad():
            model(*calib)
    return model, assignment


def save_minilm(method_name: str, out: str | Path, act_bits: int = MINILM_ACT_BITS) -> dict:
    """Quantize MiniLM with ``method_name`` (post-training) and save a checkpoint
    ``rmsmp evaluate`` reads."""
    with progress(transient=True) as prog:
        prog.add_task(f"quantizing MiniLM ({method_name}, A{act_bits})", total=None, info="")
        model, assignment = quantize_minilm(method_name, act_bits=act_bits)
    ck = _checkpoint(method_name, 0, 0, assignment, model, act_bits)
    save_checkpoint(ck, Path(out))
    return ck


def evaluate_checkpoint(
    ck: dict, n_train: int | None = DEFAULT_N_TRAIN, n_dev: int | None = None
) -> dict:
    """SST-2 scores of a saved MiniLM checkpoint (see ``save_minilm``), with a spinner that
    names each step (the first run embeds SST-2 train for the probe: minutes)."""
    with progress(transient=True) as prog:
        task = prog.add_task("loading MiniLM", total=None, info="")
        fp32, tok = load_minilm()
        prog.update(task, description=f"quantizing MiniLM ({ck['method']}, A{ck['act_bits']})")
        model, _ = quantize_minilm(
            ck["method"], act_bits=ck["act_bits"], assignment=ck["assignment"]
        )
        model.load_state_dict(ck["model"])
        prog.update(task, description="SST-2: embedding sentences, fitting and scoring the probe")
        return sst2_eval(fp32, model.eval(), tok, n_train=n_train, n_dev=n_dev)


def distill_sentences(n: int) -> list[str]:
    """``n`` SST-2 train sentences of at least ``DISTILL_MIN_WORDS`` words, drawn with a seed.

    Most of SST-2 train are short sub-phrases; dev holds whole sentences, so the student learns
    on the longer train items (labels unused).
    """
    everything, _ = sst2("train")
    long = [s for s in everything if len(s.split()) >= DISTILL_MIN_WORDS]
    pick = np.random.default_rng(DISTILL_SEED).permutation(len(long))[:n]
    return [long[i] for i in pick]


def _layer_outputs(model: torch.nn.Module) -> tuple[list[torch.Tensor], list]:
    """Forward hooks that collect every encoder layer's output, in order."""
    outs: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda mod, args, out: outs.append(out))
        for layer in model.encoder.layer
    ]
    return outs, hooks


def distill_loss(
    hs: list[torch.Tensor],
    ht: list[torch.Tensor],
    mask: torch.Tensor,
    emb_std: torch.Tensor,
) -> torch.Tensor:
    """Layer-wise masked hidden-state MSE (over the teacher's mean square), plus the MSE of the
    sentence embeddings measured in units of the teacher's per-feature std ``emb_std`` [d]
    (the probe standardises its features, so small-variance features count as much as large)."""
    if len(hs) != len(ht) or not hs:
        raise ValueError(f"need the same layers of student and teacher, got {len(hs)}, {len(ht)}")
    m = mask.unsqueeze(-1).to(hs[-1].dtype)
    loss = sum(
        ((s - t) ** 2 * m).sum() / ((t**2 * m).sum() + 1e-12) for s, t in zip(hs, ht, strict=True)
    )
    diff = (sentence_embedding(hs[-1], mask) - sentence_embedding(ht[-1], mask)) / emb_std
    return loss + (diff**2).mean()


def _checkpoint(
    method_name: str, epochs: int, epoch: int, assignment: dict, model, act_bits: int
) -> dict:
    return {
        "act_bits": act_bits,
        "version": CKPT_VERSION,
        "model_name": "minilm",
        "method": method_name,
        "epochs": epochs,
        "epoch": epoch,
        "assignment": assignment,
        "model": model.state_dict(),
        "history": [],
    }


def distill_minilm(
    method_name: str,
    epochs: int,
    out: str | Path,
    batch: int = 32,
    n_sentences: int = DISTILL_SENTENCES,
    seed: int = 0,
    act_bits: int = MINILM_ACT_BITS,
) -> dict:
    """QAT of MiniLM by distillation from the fp32 encoder; resumes from ``out`` per epoch.

    Returns the checkpoint dict (``history``: per-epoch distillation loss and seconds).
    """
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1 for QAT, got {epochs}")
    if method(method_name).ratio is None:
        raise ValueError("fp32 needs no QAT; use --epochs 0 (the fp32 encoder is the teacher)")
    out = Path(out)
    ck = None
    same_run = False
    if out.exists():
        ck = read_checkpoint(out)
        if (ck["model_name"], ck["method"], ck.get("act_bits")) != (
            "minilm",
            method_name,
            act_bits,
        ):
            raise ValueError(
                f"{out} holds {ck['model_name']} method {ck['method']} at A{ck.get('act_bits')}; "
                "use another -o to start a different run"
            )
        if ck["epochs"] == 0:
            raise ValueError(f"{out} is a post-training checkpoint; use another -o for QAT")
        same_run = restore_schedule(ck, epochs, out)
        if ck["epoch"] == epochs:
            return ck
    torch.manual_seed(seed)
    teacher, tok = load_minilm()
    student, assignment = quantize_minilm(
        method_name, seed, act_bits, None if ck is None else ck["assignment"]
    )
    # Only the quantized Linears learn (weights, biases, steps); embeddings and LayerNorm stay
    # as pretrained: a sign-sized Adam step on the LayerNorm gains alone raised the loss by 12%.
    linears = [m for m in student.modules() if isinstance(m, torch.nn.Linear)]
    learned = [p for m in linears for p in (m.weight, m.bias, m.wq.alpha, m.aq.step)]
    for p in student.parameters():
        p.requires_grad_(False)
    for p in learned:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(learned, lr=DISTILL_LR, weight_decay=0.0)
    sentences = distill_sentences(n_sentences)
    with progress(transient=True) as prog:
        prog.add_task(f"embedding {len(sentences)} sentences (fp32)", total=None, info="")
        emb_std = torch.from_numpy(embed(teacher, tok, sentences).std(axis=0) + 1e-6)
    per_epoch = -(-len(sentences) // batch)
    if ck is None:
        ck = _checkpoint(method_name, epochs, 0, assignment, student, act_bits)
    else:
        student.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    # An extension's cycle covers only the added epochs; a resumed run's state replaces this one.
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        DISTILL_LR,
        total_steps=(epochs - ck["epoch"]) * per_epoch,
        pct_start=0.1,
        anneal_strategy="linear",
    )
    if same_run:
        sched.load_state_dict(ck["scheduler"])
    hs, hooks_s = _layer_outputs(student)
    ht, hooks_t = _layer_outputs(teacher)
    try:
        for epoch in range(ck["epoch"], epochs):
            student.train()
            order = np.random.default_rng(seed * 1000 + epoch).permutation(len(sentences))
            t0 = time.perf_counter()
            total = 0.0
            with progress() as prog:
                task = prog.add_task(
                    f"minilm {method_name} epoch {epoch + 1}/{epochs}", total=per_epoch, info=""
                )
                for step, i in enumerate(range(0, len(order), batch), start=1):
                    ids, mask, types = _batch(tok, [sentences[j] for j in order[i : i + batch]])
                    hs.clear()
                    ht.clear()
                    with torch.no_grad():
                        teacher(ids, mask, types)
                    student(ids, mask, types)
                    loss = distill_loss(hs, ht, mask, emb_std)
                    total += optimizer_step(opt, sched, loss)
                    prog.update(task, advance=1, info=f"loss {total / step:.4f}")
            history = [
                *ck["history"],
                {
                    "epoch": epoch + 1,
                    "loss": total / per_epoch,
                    "seconds": time.perf_counter() - t0,
                },
            ]
            ck = _checkpoint(method_name, epochs, epoch + 1, assignment, student, act_bits)
            ck.update(history=history, optimizer=opt.state_dict(), scheduler=sched.state_dict())
            save_checkpoint(ck, out)
            print(f"epoch {epoch + 1}: distillation loss {total / per_epoch:.4f}")
    finally:
        for h in hooks_s + hooks_t:
            h.remove()
    return ck
