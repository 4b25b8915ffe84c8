"""From a file on disk to an integer graph: what ``rmsmp compile`` reads.

Two kinds of file compile: a QAT checkpoint written by ``rmsmp quantize`` (its integer graph is
exported as trained, with 8-bit logits calibrated on a batch), or a ``torch.save``d float
``nn.Module`` (quantized post-training with ``rmsmp.quantize`` on a calibration batch). The
calibration batch is CIFAR-10 training images for 3x32x32 inputs, else standard-normal noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..compiler.ir import IntGraph

CALIBRATION_IMAGES = 256
"""Images in a calibration batch, at most."""
CALIBRATION_VALUES = 1 << 21
"""Input values in a calibration batch, at most: 4 ImageNet-sized images still calibrate in
seconds, where 256 of them would take minutes."""


class ModelFileError(ValueError):
    """A model file that cannot be compiled; the message names the file and the fix."""


def calibration_batch(input_shape: tuple[int, ...]) -> torch.Tensor:
    """Inputs of ``input_shape``: CIFAR-10 training images for 3x32x32, else N(0, 1)."""
    n = max(4, min(CALIBRATION_IMAGES, CALIBRATION_VALUES // int(np.prod(input_shape))))
    if tuple(input_shape) == (3, 32, 32):
        from .data import cifar10

        x, _ = cifar10("train", n, seed=1)
        return torch.from_numpy(x)
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *input_shape, generator=g)


def graph_from_file(
    path: str | Path, input_shape: tuple[int, ...] | None, ratio: dict[str, float] | None = None
) -> IntGraph:
    """The integer graph of a QAT checkpoint or of a saved float module (see the module doc).

    ``input_shape`` (per sample) is required for a module and checked for a checkpoint.
    ``ratio`` is the format ratio a float module is quantized at (``rmsmp.quantize``'s default
    when None).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not its own
        raise ModelFileError(
            f"{path} is not a file torch.load can read ({type(e).__name__}); give a checkpoint "
            "from `rmsmp quantize` or a module saved with torch.save(model, path)"
        ) from None
    if isinstance(obj, dict) and "model_name" in obj:
        return _from_checkpoint(path, obj, input_shape)
    if isinstance(obj, nn.Module):
        if input_shape is None:
            raise ModelFileError(
                f"{path} holds a {type(obj).__name__} module; give its per-sample input shape "
                "with --input-shape (e.g. 3,32,32)"
            )
        import rmsmp

        from .export import export

        x = calibration_batch(input_shape)
        kw = {} if ratio is None else {"ratio": ratio}
        return export(rmsmp.quantize(obj.eval().float(), x, **kw))
    raise ModelFileError(
        f"{path} holds a {type(obj).__name__}, not a model; give a checkpoint from "
        "`rmsmp quantize` or a module saved with torch.save(model, path) (not its state_dict)"
    )


def _from_checkpoint(path: Path, ck: dict, input_shape: tuple[int, ...] | None) -> IntGraph:
    from .export import export_qat
    from .train import load_checkpoint

    if ck["model_name"] == "minilm":
        raise ModelFileError(
            f"{path} is a MiniLM checkpoint; the accelerator runs CNNs, compile a CNN checkpoint"
        )
    if ck.get("method") == "fp32":
        raise ModelFileError(
            f"{path} is an fp32 checkpoint; quantize it first (rmsmp quantize --method rmsmp)"
        )
    shape = (3, 32, 32)
    if input_shape is not None and tuple(input_shape) != shape:
        raise ModelFileError(
            f"{path} holds a CIFAR-10 {ck['model_name']} that takes 3x32x32 inputs, not "
            f"{'x'.join(map(str, input_shape))}; drop --input-shape or pass 3,32,32"
        )
    model, _ = load_checkpoint(path)
    return export_qat(model.eval(), shape, logits_from=calibration_batch(shape))
