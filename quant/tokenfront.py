"""From a MiniLM checkpoint to a hybrid graph: what ``rmsmp compile`` does with a token model.

A ``rmsmp quantize --model minilm`` checkpoint (the sentence encoder: token ids, attention mask
and token types in, last hidden state out) or a GLUE SST-2 classifier checkpoint
(``quant.glue``: logits out) is rebuilt with its QAT Linears and captured whole
(``quant.transformer``) at a fixed sequence length: embeddings, softmax, LayerNorm, GELU
and the attention matmuls on the host, the 36 encoder Linears on the accelerator. The device
outputs' 8-bit grids are calibrated on SST-2 train sentences padded to that length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..compiler.hybrid import HybridGraph
from .data import sst2
from .models.minilm import MAX_LENGTH, load_tokenizer
from .transformer import capture_tokens

TOKEN_MODELS = ("minilm", "minilm-sst2")
"""Checkpoint ``model_name``s that compile to a hybrid graph."""
CALIB_SENTENCES = 32
"""SST-2 train sentences that calibrate the device outputs' grids."""


def encode(sentences: list[str], tokens: int) -> list[np.ndarray]:
    """Token ids, attention mask and token types of ``sentences``, padded or cut to ``tokens``
    (int64, [n, tokens] each): the inputs of a compiled MiniLM."""
    if not 1 <= tokens <= MAX_LENGTH:
        raise ValueError(f"--tokens must be in [1, {MAX_LENGTH}], got {tokens}")
    tok = load_tokenizer(max_length=tokens)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]", length=tokens)
    enc = tok.encode_batch(list(sentences))
    fields = ("ids", "attention_mask", "type_ids")
    return [np.array([getattr(e, f) for e in enc], dtype=np.int64) for f in fields]


def token_model(ck: dict) -> torch.nn.Module:
    """The QAT model of a MiniLM checkpoint, its state loaded (eval mode)."""
    name, method = ck["model_name"], ck["method"]
    if name == "minilm":
        from .nlp import quantize_minilm

        model, _ = quantize_minilm(method, act_bits=ck["act_bits"], assignment=ck["assignment"])
    else:
        from .glue import classifier

        model, _ = classifier(method, ck["assignment"], act_bits=ck["act_bits"])
    model.load_state_dict(ck["model"])
    return model.eval()


def hybrid_from_checkpoint(path: str | Path, ck: dict, tokens: int = MAX_LENGTH) -> HybridGraph:
    """The hybrid graph of the MiniLM checkpoint ``ck`` (read from ``path``) at ``tokens``."""
    if ck.get("method") == "fp32" or not ck.get("assignment"):
        raise ValueError(
            f"{path} is an fp32 checkpoint; quantize it first (rmsmp quantize --model minilm "
            "--method rmsmp)"
        )
    calib = encode(sst2("train", CALIB_SENTENCES, 1)[0], tokens)
    graph = capture_tokens(token_model(ck), tuple(torch.from_numpy(a) for a in calib))
    graph.meta.update(checkpoint=str(path), method=ck["method"], tokens=tokens)
    graph.meta["inputs"] = ["ids", "mask", "types"]
    return graph
