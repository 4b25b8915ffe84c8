"""Real evaluation data: CIFAR-10 (JPEG copy) from the shared read-only data directory.

The JPEGs are decoded with Pillow once and the uint8 arrays cached under the user cache dir, so
later loads take milliseconds. Nothing is ever written to the repository or to the shared data.
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


def cifar10(split: str, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images (float32 NCHW) and labels (int64) of a split.

    ``n`` draws a random subset (seeded by ``seed``) because the archive is grouped by class.
    """
    images, labels = cifar10_raw(split)
    if n is not None:
        if not 1 <= n <= len(labels):
            raise ValueError(f"n must be in [1, {len(labels)}] for the {split} split, got {n}")
        idx = np.random.default_rng(seed).choice(len(labels), size=n, replace=False)
        images, labels = images[idx], labels[idx]
    return normalize(images), labels


def cifar10_test(n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 (JPEG copy) test split, or a random subset of ``n`` images."""
    return cifar10("test", n, seed)
