"""Real evaluation data from the shared read-only data directory: CIFAR-10 (JPEG copy), SST-2.

The CIFAR-10 JPEGs are decoded with Pillow once and the uint8 arrays cached under the user cache
dir, so later loads take milliseconds. SST-2 is small text and is read directly. Nothing is ever
written to the repository or to the shared data.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_MEAN = (0.485, 0.456, 0.406)
CIFAR10_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "test")
SST2_SPLITS = ("train", "dev")


def shared_data_dir() -> Path:
    """The shared data directory: ``$RMSMP_SHARED_DATA`` or ``shared/data`` beside the repo."""
    env = os.environ.get("RMSMP_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared/data"


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$XDG_CACHE_HOME/rmsmp`` (default ``~/.cache/rmsmp``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmsmp"


def _npz_path() -> Path:
    path = shared_data_dir() / "cifar10/cifar10_jpeg.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR-10 JPEG archive not found at {path}; put cifar10_jpeg.npz there "
            "or set RMSMP_SHARED_DATA to the directory that holds cifar10/cifar10_jpeg.npz"
        )
    return path


def _decode(npz: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(npz) as d:
        blob, off, labels = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"{split}_labels"]
    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for i in range(len(labels)):
        with Image.open(io.BytesIO(blob[off[i] : off[i + 1]].tobytes())) as im:
            images[i] = np.asarray(im.convert("RGB"))
    return images, labels.astype(np.int64)


def cifar10_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images [N, 32, 32, 3] uint8 and labels [N] int64 of a split, cached on disk.

    Images are grouped by class in the archive, in the order stored there.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; use one of {SPLITS}")
    npz = _npz_path()
    st = npz.stat()
    key = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "cifar10"
    xf, yf = out / f"{split}-{key}-images.npy", out / f"{split}-{key}-labels.npy"
    if xf.is_file() and yf.is_file():
        return np.load(xf), np.load(yf)
    images, labels = _decode(npz, split)
    out.mkdir(parents=True, exist_ok=True)
    for path, arr in ((xf, images), (yf, labels)):
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    return images, labels


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images to float32 NCHW, normalised with the ImageNet mean/std the model uses."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.array(CIFAR10_MEAN, np.float32)) / np.array(CIFAR10_STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _subset(n: int | None, seed: int, size: int, what: str) -> np.ndarray | None:
    """Indices of a seeded random subset of ``n`` out of ``size`` items, or None for all."""
    if n is None:
        return None
    if not 1 <= n <= size:
        raise ValueError(f"n must be in [1, {size}] for {what}, got {n}")
    return np.random.default_rng(seed).choice(size, size=n, replace=False)


def cifar10(split: str, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images (float32 NCHW) and labels (int64) of a split.

    ``n`` draws a random subset (seeded by ``seed``) because the archive is grouped by class.
    """
    images, labels = cifar10_raw(split)
    idx = _subset(n, seed, len(labels), f"the {split} split")
    if idx is not None:
        images, labels = images[idx], labels[idx]
    return normalize(images), labels


def cifar10_test(n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 (JPEG copy) test split, or a random subset of ``n`` images."""
    return cifar10("test", n, seed)


def sst2(split: str, n: int | None = None, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """GLUE SST-2 sentences (lower-cased, GLUE-tokenised) and labels (int64, 1 = positive).

    ``split`` is "train" (67,349 rows) or "dev" (872 rows, the GLUE dev set used as test).
    ``n`` draws a random subset seeded by ``seed``, in random order.
    """
    if split not in SST2_SPLITS:
        raise ValueError(f"unknown SST-2 split {split!r}; use one of {SST2_SPLITS}")
    path = shared_data_dir() / f"sst2/{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(
            f"SST-2 file not found at {path}; put {split}.tsv there or set RMSMP_SHARED_DATA to "
            f"the directory that holds sst2/{split}.tsv"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != ["sentence", "label"]:
        raise ValueError(f"{path}: expected a header 'sentence<TAB>label', got {lines[:1]!r}")
    sentences, labels = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        text, sep, label = line.rpartition("\t")
        if not sep or label not in ("0", "1"):
            raise ValueError(f"{path}:{lineno}: expected 'sentence<TAB>0|1', got {line!r}")
        sentences.append(text.strip())
        labels.append(int(label))
    y = np.array(labels, dtype=np.int64)
    idx = _subset(n, seed, len(y), f"the SST-2 {split} split")
    if idx is not None:
        sentences, y = [sentences[i] for i in idx], y[idx]
    return sentences, y
