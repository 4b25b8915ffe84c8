"""ResNet-18 (ImageNet topology), the MiniLM sentence encoder, SST-2 data and the probe protocol."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from rmsmp.quant import probe as probe_mod
from rmsmp.quant.data import sst2
from rmsmp.quant.models.minilm import embed, linear_layers, load_minilm, model_dir
from rmsmp.quant.models.resnet_imagenet import count_macs, resnet18
from rmsmp.quant.probe import (
    cosine_to_reference,
    probe_accuracy,
    sst2_embeddings,
    sst2_eval,
    train_probe,
)

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing the guitar.",
    "The stock market fell sharply today.",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "a",
    "",
    "the film is long " * 60,  # > 128 tokens: exercises truncation
]


# ---- ResNet-18 ----------------------------------------------------------------------------------


def test_resnet18_size_output_and_torchvision_names():
    model = resnet18()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
    names = set(model.state_dict())
    assert len(names) == 122  # torchvision resnet18().state_dict() has 122 entries
    for key in ("conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        assert key in names
    assert "layer1.0.downsample.0.weight" not in names  # identity shortcut in stage 1
    assert {"fc.weight", "fc.bias"} <= names


def test_resnet18_macs():
    macs = count_macs(resnet18(), (1, 3, 224, 224))
    assert macs == pytest.approx(1.81e9, rel=0.02)
    # Counts scale with the batch; a 10-class head saves 512 * 990 MACs per image.
    assert count_macs(resnet18(num_classes=10), (2, 3, 224, 224)) == 2 * (macs - 512 * 990)


# ---- MiniLM -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_minilm_embeddings_shape_norm_and_paraphrase(minilm):
    model, tok = minilm
    emb = embed(model, tok, SENTENCES)
    assert emb.shape == (8, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = emb[0] @ emb[1], emb[0] @ emb[2]
    assert paraphrase > 0.7 > 0.3 > unrelated
    # Deterministic, and independent of batching (per-batch padding, length sorting).
    np.testing.assert_array_equal(embed(model, tok, SENTENCES), emb)
    np.testing.assert_allclose(embed(model, tok, SENTENCES, batch_size=3), emb, atol=1e-5)


def test_minilm_matches_sentence_transformers(minilm, monkeypatch):
    """Same embeddings as the package's own sentence-transformers pipeline, loaded offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    ref_model = SentenceTransformer(str(model_dir()), device="cpu")
    ref_model.max_seq_length = 128
    ref = ref_model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(embed(*minilm, SENTENCES), ref, atol=1e-4)


def test_minilm_linear_layers(minilm):
    model, _ = minilm
    names = linear_layers(model)
    per_layer = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]
    assert names == [f"encoder.layer.{i}.{n}" for i in range(6) for n in per_layer]
    mods = dict(model.named_modules())
    assert all(type(mods[n]) is nn.Linear for n in names)
    assert (mods[names[4]].in_features, mods[names[4]].out_features) == (384, 1536)


def test_minilm_rejects_a_single_string(minilm):
    with pytest.raises(TypeError, match="list of strings"):
        embed(*minilm, "one sentence")


# ---- SST-2 --------------------------------------------------------------------------------------


def test_sst2_sizes_labels_and_subsets():
    train, y_train = sst2("train")
    dev, y_dev = sst2("dev")
    assert (len(train), len(y_train), len(dev), len(y_dev)) == (67_349, 67_349, 872, 872)
    assert set(np.unique(y_train)) == set(np.unique(y_dev)) == {0, 1}
    assert all(isinstance(s, str) and s for s in dev)
    sub, y_sub = sst2("train", n=50, seed=3)
    assert sub == sst2("train", n=50, seed=3)[0] and sub != sst2("train", n=50, seed=4)[0]
    index = {s: i for i, s in enumerate(train)}
    assert all(y_train[index[s]] == y for s, y in zip(sub, y_sub, strict=True))
    with pytest.raises(ValueError, match="unknown SST-2 split"):
        sst2("test")
    with pytest.raises(ValueError, match=r"n must be in \[1, 872\]"):
        sst2("dev", n=873)


def test_sst2_missing_data_names_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("RMSMP_SHARED_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="RMSMP_SHARED_DATA"):
        sst2("dev")


# ---- probe --------------------------------------------------------------------------------------


def test_probe_and_cosine_on_synthetic_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    centers = rng.normal(size=(3, 16)) * 3
    x = (centers[y] + rng.normal(size=(600, 16))).astype(np.float32)
    p = train_probe(x[:400], y[:400])
    assert probe_accuracy(p, x[400:], y[400:]) > 0.95
    assert cosine_to_reference(x, x) == pytest.approx(1.0)
    assert cosine_to_reference(-x, x) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="probe expects embeddings"):
        p.predict(x[:, :8])
    with pytest.raises(ValueError, match="shapes differ"):
        cosine_to_reference(x, x[:10])


def _fake_quant_int8(model: nn.Module) -> nn.Module:
    """A copy with every encoder Linear weight rounded to 8 bits per output row (symmetric)."""
    q = copy.deepcopy(model)
    mods = dict(q.named_modules())
    with torch.no_grad():
        for name in linear_layers(q):
            w = mods[name].weight
            scale = w.abs().amax(dim=1, keepdim=True) / 127
            w.copy_(torch.round(w / scale) * scale)
    return q


def test_sst2_eval_smoke_and_cache(minilm, tmp_path, monkeypatch):
    """Small protocol run: same encoder twice gives equal accuracies; fp32 embeddings cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model, tok = minilm
    res = sst2_eval(model, model, tok, n_train=500, n_dev=100)
    assert res["fp32_acc"] == res["q_acc"] > 0.65
    assert res["cosine"] == pytest.approx(1.0, abs=1e-6)
    cached = sorted(p.name for p in (tmp_path / "rmsmp/sst2").iterdir())
    assert len(cached) == 2 and cached[0].startswith("dev-") and "-n100-s0" in cached[0]

    def no_embedding(*_args, **_kwargs):
        raise AssertionError("fp32 embeddings should come from the cache")

    first = sst2_embeddings(model, tok, "train", 500)
    monkeypatch.setattr(probe_mod, "embed", no_embedding)
    np.testing.assert_array_equal(sst2_embeddings(model, tok, "train", 500)[0], first[0])
    with pytest.raises(AssertionError, match="from the cache"):  # other weights: other key
        sst2_embeddings(_fake_quant_int8(model), tok, "train", 500)


@pytest.mark.slow
def test_sst2_eval_protocol_fp32_and_int8(minilm, tmp_path, monkeypatch):
    """Full dev set, 2,000 train sentences: fp32 > 70%, and 8-bit weights barely change it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model, tok = minilm
    res = sst2_eval(model, _fake_quant_int8(model), tok, n_train=2000)
    assert res["fp32_acc"] > 0.70
    assert abs(res["q_acc"] - res["fp32_acc"]) < 0.03
    assert res["cosine"] > 0.98


# ---- MiniLM distillation QAT --------------------------------------------------------------------


def test_distill_loss_zero_only_for_the_teacher():
    """Equal hidden states cost nothing; any change in a real token costs, padding does not."""
    from rmsmp.quant.nlp import distill_loss

    g = torch.Generator().manual_seed(0)
    ht = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    std = torch.full((8,), 0.1)

    def loss(hs):
        return float(distill_loss(hs, ht, mask, std))

    assert loss([t.clone() for t in ht]) == pytest.approx(0.0, abs=1e-6)
    padded = [t.clone() for t in ht]
    padded[2][0, 4] += 10.0  # a padding position of sentence 0, last layer
    assert loss(padded) == pytest.approx(0.0, abs=1e-6)
    inner = [t.clone() for t in ht]
    inner[1][0, 2] += 1.0
    assert loss(inner) > 1e-3
    last = [t.clone() for t in ht]
    last[2][0, 2] += 1.0
    assert loss(last) > loss(inner)  # the sentence embedding moved too
    with pytest.raises(ValueError, match="same layers"):
        distill_loss(ht[:2], ht, mask, std)


def test_distill_minilm_trains_resumes_and_evaluates(tmp_path, monkeypatch):
    """A tiny distillation run lowers the loss, records its settings, and resumes as a no-op."""
    from rmsmp.quant import nlp

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out = tmp_path / "m.pt"
    ck = nlp.distill_minilm("rmsmp", 2, out, batch=16, n_sentences=64)
    losses = [h["loss"] for h in ck["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert ck["act_bits"] == nlp.MINILM_ACT_BITS and ck["epoch"] == 2
    fmts = {f for rows in ck["assignment"].values() for f in rows}
    assert fmts == {"pot4", "fixed4", "fixed8"}
    again = nlp.distill_minilm("rmsmp", 2, out, batch=16, n_sentences=64)
    assert again["history"] == ck["history"]
    with pytest.raises(ValueError, match="another -o"):
        nlp.distill_minilm("fixed4", 2, out)
    with pytest.raises(ValueError, match="no QAT"):
        nlp.distill_minilm("fp32", 1, tmp_path / "f.pt")
    res = nlp.evaluate_checkpoint(torch.load(out, weights_only=False), n_train=200, n_dev=64)
    assert 0.7 < res["cosine"] <= 1.0  # the reloaded encoder still embeds like the fp32 one


def test_quantize_minilm_keep_ends_sets_the_end_linears_format(monkeypatch):
    """The first and last encoder Linears are Fixed-8 with ``keep_ends`` and take the method's
    rows without it; every inner Linear gets the method's rows either way."""
    from rmsmp.quant import nlp

    monkeypatch.setattr(nlp, "CALIB_SENTENCES", 8)  # formats do not depend on calibration
    kept, a_kept = nlp.quantize_minilm("fixed4")
    mixed, a_mixed = nlp.quantize_minilm("fixed4", keep_ends=False)
    names = [n for n in linear_layers(kept) if n in a_kept]
    assert len(names) == 36 and set(names) == set(a_mixed)
    ends = {names[0], names[-1]}
    for name in names:
        assert set(a_mixed[name]) == {"fixed4"}
        assert set(a_kept[name]) == ({"fixed8"} if name in ends else {"fixed4"})


def test_quantize_minilm_is_reproducible(monkeypatch):
    """Post-training quantization gives the same steps whatever the caller's torch seed: the
    activation steps start from a random sample of each input, drawn from ``seed``."""
    from rmsmp.quant import nlp

    monkeypatch.setattr(nlp, "CALIB_SENTENCES", 8)
    steps = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model, _ = nlp.quantize_minilm("fixed4")
        steps.append([float(m.aq.step) for m in model.modules() if hasattr(m, "aq")])
    assert len(steps[0]) == 36
    assert steps[0] == steps[1]
