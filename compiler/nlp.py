"""MiniLM on SST-2: quantize every encoder Linear with a method, score it with the probe.

Embeddings, softmax and LayerNorm stay float; the 36 encoder ``nn.Linear`` layers are quantized
row by row like any other model's (``methods.prepare``), activations calibrated on SST-2 train
sentences. Accuracy is that of a logistic-regression probe trained on fp32 embeddings.
"""

from __future__ import annotations

import time

import torch

from .data import sst2
from .methods import method, prepare
from .models.minilm import load_minilm
from .probe import DEFAULT_N_TRAIN, sst2_eval

CALIB_SENTENCES = 256


def _batch(tokenizer, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tokenizer.encode_batch(sentences)
    width = max(sum(e.attention_mask) for e in enc)
    ids = torch.tensor([e.ids[:width] for e in enc])
    mask = torch.tensor([e.attention_mask[:width] for e in enc])
    types = torch.tensor([e.type_ids[:width] for e in enc])
    return ids, mask, types


def quantize_minilm(method_name: str, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """MiniLM with every encoder Linear quantized by ``method_name`` (post-training)."""
    model, tok = load_minilm()
    sentences, _ = sst2("train", CALIB_SENTENCES, seed + 1)
    calib = _batch(tok, sentences)
    assignment = prepare(model, method(method_name), calib)
    model.eval()
    with torch.no_grad():
        model(*calib)
    return model, assignment


def evaluate_minilm(method_name: str, n_train: int | None = DEFAULT_N_TRAIN) -> dict:
    """fp32 and quantized SST-2 dev accuracy under the fp32 probe, and embedding cosine."""
    t0 = time.perf_counter()
    fp32, tok = load_minilm()
    qmodel, _ = quantize_minilm(method_name)
    res = sst2_eval(fp32, qmodel, tok, n_train=n_train)
    res["seconds"] = time.perf_counter() - t0
    return res


def save_minilm(method_name: str, out: str) -> dict:
    """Quantize MiniLM with ``method_name`` and save a checkpoint ``rmsmp evaluate`` reads."""
    from .train import CKPT_VERSION

    model, assignment = quantize_minilm(method_name)
    ck = {
        "version": CKPT_VERSION,
        "model_name": "minilm",
        "method": method_name,
        "epochs": 0,
        "epoch": 0,
        "assignment": assignment,
        "model": model.state_dict(),
        "history": [],
    }
    torch.save(ck, out)
    return ck


def evaluate_checkpoint(ck: dict, n_train: int | None = DEFAULT_N_TRAIN) -> dict:
    """SST-2 scores of a saved MiniLM checkpoint (see ``save_minilm``)."""
    fp32, tok = load_minilm()
    model, _ = load_minilm()
    sentences, _ = sst2("train", CALIB_SENTENCES, 1)
    prepare(model, method(ck["method"]), _batch(tok, sentences), ck["assignment"])
    model.load_state_dict(ck["model"])
    return sst2_eval(fp32, model.eval(), tok, n_train=n_train)
