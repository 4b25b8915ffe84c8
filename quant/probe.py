"""SST-2 linear-probe accuracy protocol for a (possibly quantized) sentence encoder.

Protocol: embed an SST-2 train subset with the fp32 encoder, fit a logistic-regression probe on
those embeddings, then embed the SST-2 dev set with the fp32 and the quantized encoder and score
both with the same probe. The probe stays fixed, so the accuracy drop and the mean cosine
similarity to the fp32 embeddings measure only what quantization did to the encoder.

fp32 embeddings are expensive on CPU (all 67,349 train sentences: about 4 CPU-minutes), so they
are cached as .npy under the user cache dir, keyed by a hash of the encoder's weights and the
tokenizer's truncation, the data file, the split, ``n`` and ``seed``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .data import cache_dir, shared_data_dir, sst2
from .models.minilm import embed

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Embedding costs about 28 CPU-seconds per 8,000 train sentences (mostly short phrases, ~285 per
# core-second) and 6 per 872 dev sentences (~145 per core-second): a first, uncached sst2_eval
# with 8,000 needs about 45 CPU-seconds (under a minute on 2 idle cores; measured 2.5-3 minutes
# on 2 cores shared with other jobs); later calls pay only the quantized dev pass. Dev accuracy of
# the fp32 probe: 79.0% (2,000), 80.2% (8,000), 80.7% (all 67,349, 8x the embedding time).
DEFAULT_N_TRAIN = 8000
# Chosen on a held-out part of the train split (not on dev): 0.1 was best or tied for 1,500
# and 6,000 training sentences.
DEFAULT_L2 = 0.1


@dataclass(frozen=True)
class Probe:
    """Multinomial logistic regression on standardised embeddings."""

    mean: np.ndarray  # [d] feature mean of the training embeddings
    std: np.ndarray  # [d] feature std of the training embeddings
    weight: np.ndarray  # [d, classes]
    bias: np.ndarray  # [classes]

    def logits(self, emb: np.ndarray) -> np.ndarray:
        """Class scores [n, classes] for embeddings [n, d]."""
        if emb.ndim != 2 or emb.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"probe expects embeddings [n, {self.weight.shape[0]}], got {list(emb.shape)}"
            )
        return ((emb - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, emb: np.ndarray) -> np.ndarray:
        """Predicted labels [n] int64."""
        return self.logits(emb).argmax(axis=1)


def train_probe(
    emb_train: np.ndarray, y_train: np.ndarray, l2: float = DEFAULT_L2, max_iter: int = 500
) -> Probe:
    """Fit the probe by full-batch L-BFGS on mean cross-entropy + ``l2``/2 * ||W||^2 (float64).

    Features are standardised first so one ``l2`` suits any encoder's embedding scale.
    """
    if emb_train.ndim != 2 or len(emb_train) != len(y_train):
        raise ValueError(
            f"need embeddings [n, d] and n labels, got {list(emb_train.shape)} and {len(y_train)}"
        )
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    classes = int(y.max()) + 1
    if classes < 2 or int(y.min()) < 0:
        raise ValueError(f"labels must be 0..k-1 with k >= 2, got {sorted(set(y.tolist()))}")
    mean = emb_train.mean(axis=0)
    std = emb_train.std(axis=0) + 1e-8
    x = torch.as_tensor((emb_train - mean) / std, dtype=torch.float64)
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(
        mean.astype(np.float64),
        std.astype(np.float64),
        w.detach().numpy(),
        b.detach().numpy(),
    )


def probe_accuracy(probe: Probe, emb: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``emb`` rows whose predicted label equals ``y``."""
    return float((probe.predict(emb) == np.asarray(y)).mean())


def cosine_to_reference(emb: np.ndarray, emb_ref: np.ndarray) -> float:
    """Mean cosine similarity between matching rows of ``emb`` and ``emb_ref``."""
    if emb.shape != emb_ref.shape:
        raise ValueError(f"embedding shapes differ: {list(emb.shape)} vs {list(emb_ref.shape)}")
    num = (emb * emb_ref).sum(axis=1)
    den = np.linalg.norm(emb, axis=1) * np.linalg.norm(emb_ref, axis=1)
    return float((num / np.maximum(den, 1e-12)).mean())


def _fingerprint(encoder: nn.Module, tokenizer: Tokenizer) -> str:
    """A short hash of the encoder's weights and buffers and the tokenizer's truncation."""
    h = hashlib.sha256(repr(tokenizer.truncation).encode())
    for name, t in encoder.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def sst2_embeddings(
    encoder: nn.Module,
    tokenizer: Tokenizer,
    split: str,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [n, d] float32 and labels of an SST-2 split (subset), cached on disk.

    Meant for the fp32 reference encoder; the key hashes its weights, so a changed encoder never
    reads a stale file.
    """
    sentences, labels = sst2(split, n, seed)
    st = (shared_data_dir() / f"sst2/{split}.tsv").stat()
    data = f"{st.st_size}:{st.st_mtime_ns}"
    key = hashlib.sha256(f"{_fingerprint(encoder, tokenizer)}:{data}".encode()).hexdigest()[:12]
    path = cache_dir() / "sst2" / f"{split}-{key}-n{n or 'all'}-s{seed}.npy"
    if path.is_file():
        return np.load(path), labels
    emb = embed(encoder, tokenizer, sentences, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb, labels


def sst2_eval(
    encoder_fp32: nn.Module,
    encoder_q: nn.Module,
    tokenizer: Tokenizer,
    n_train: int | None = DEFAULT_N_TRAIN,
    n_dev: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, float]:
    """SST-2 dev accuracy of the fp32 and the quantized encoder under one fp32-trained probe.

    Returns ``fp32_acc``, ``q_acc`` and ``cosine`` (mean cosine similarity of the quantized dev
    embeddings to the fp32 ones). ``n_train`` (None = all 67,349) train sentences fit the probe;
    ``n_dev`` (None = all 872, the protocol) dev sentences are scored, for quick smoke runs only.
    Both subsets are drawn with ``seed``; the fp32 train and dev embeddings are cached.
    """
    emb_train, y_train = sst2_embeddings(
        encoder_fp32, tokenizer, "train", n_train, seed, batch_size
    )
    probe = train_probe(emb_train, y_train)
    emb_dev, y_dev = sst2_embeddings(encoder_fp32, tokenizer, "dev", n_dev, seed, batch_size)
    sentences, _ = sst2("dev", n_dev, seed)
    emb_q = embed(encoder_q, tokenizer, sentences, batch_size)
    return {
        "fp32_acc": probe_accuracy(probe, emb_dev, y_dev),
        "q_acc": probe_accuracy(probe, emb_q, y_dev),
        "cosine": cosine_to_reference(emb_q, emb_dev),
    }
