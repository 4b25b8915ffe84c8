"""SST-2 fine-tuning (GLUE protocol): the classifier pools real tokens only; QAT needs a teacher."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rmsmp.quant.glue import SentenceClassifier, classifier, finetune
from rmsmp.quant.qat import ActQuantizer


class _Tokens(nn.Module):
    """A stand-in encoder: one embedding per token id."""

    config = SimpleNamespace(hidden_size=6)

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


def test_classifier_pools_over_real_tokens_only() -> None:
    torch.manual_seed(0)
    model = SentenceClassifier(_Tokens()).eval()
    ids = torch.tensor([[3, 5, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    short = model(ids[:, :3], mask[:, :3], torch.zeros_like(ids[:, :3]))
    padded = model(torch.tensor([[3, 5, 7, 9, 11]]), mask, torch.zeros_like(ids))
    assert torch.allclose(short, padded)
    want = model.head(model.encoder.emb(ids[0, :3]).mean(0))
    assert torch.allclose(short[0], want, atol=1e-6)
    assert short.shape == (1, 2)


def test_quantized_fine_tuning_needs_the_fp32_teacher(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="teacher"):
        finetune("rmsmp", 1, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="at least 1"):
        finetune("fp32", 0, tmp_path / "x.pt")


def test_quantized_classifier_takes_the_activation_width() -> None:
    model, assignment = classifier("fixed4", act_bits=4)
    widths = [m.bits for m in model.modules() if isinstance(m, ActQuantizer)]
    # every encoder Linear; the first and the last are the method's 8-bit ends, the head is float
    assert len(assignment) == len(widths) == 36
    assert widths.count(4) == 34 and widths.count(8) == 2
    assert not isinstance(getattr(model.head, "aq", None), ActQuantizer)


@pytest.mark.slow
def test_fine_tune_then_qat_with_distillation_resumes(tmp_path: Path) -> None:
    fp32 = finetune("fp32", 1, tmp_path / "fp32.pt", n_train=32, n_dev=32)
    assert fp32["act_bits"] is None and fp32["kd"] is None
    q = finetune("fixed4", 1, tmp_path / "q.pt", tmp_path / "fp32.pt", n_train=32, n_dev=32)
    assert q["act_bits"] == 8 and q["kd"]["teacher"] == str(tmp_path / "fp32.pt")
    again = finetune("fixed4", 2, tmp_path / "q.pt", tmp_path / "fp32.pt", n_train=32, n_dev=32)
    assert [h["epoch"] for h in again["history"]] == [1, 2]
    assert 0 <= again["history"][-1]["dev_acc"] <= 100
    with pytest.raises(ValueError, match="holds minilm-sst2 fixed4 at A8"):
        finetune("fixed4", 2, tmp_path / "q.pt", tmp_path / "fp32.pt", 32, 32, act_bits=4)
    a4 = finetune("fixed4", 1, tmp_path / "a4.pt", tmp_path / "fp32.pt", 32, 32, act_bits=4)
    assert a4["act_bits"] == 4
