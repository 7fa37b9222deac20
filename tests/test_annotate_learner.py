"""The annotation loop's MLP learner: hand-written gradients against autograd, and a fit that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from luab_fast.annotate.learner import LearnerConfig, MLPLearner, Tanh, _mlp, class_weights, mlp_grads, reference_grads


def test_tanh_matches_torch():
    x = torch.linspace(-12, 12, 10_001)
    torch.testing.assert_close(Tanh()(x), torch.tanh(x), atol=5e-7, rtol=0)


@pytest.mark.parametrize("targets", ["hard", "soft"])
@pytest.mark.parametrize("batch", [1024, 37])  # a full batch and an epoch's short last one
def test_mlp_grads_match_autograd(targets, batch):
    gen = torch.Generator().manual_seed(3)
    k, d = 12, 20
    torch.manual_seed(0)
    model = _mlp(d, k, 16)
    x = torch.randn(batch, d, generator=gen) * 2
    if targets == "hard":
        y = torch.randint(0, k, (batch,), generator=gen)
    else:
        y = torch.softmax(torch.randn(batch, k, generator=gen) * 3, 1)
    weight = class_weights(y, k) * (0.5 + torch.rand(k, generator=gen))  # uneven weights exercise the weighting
    ours = mlp_grads(model, x, y, weight)
    ref = reference_grads(model, x, y, weight)
    assert [g.shape for g in ours] == [g.shape for g in ref]
    for name, a, b in zip(("W1", "b1", "W2", "b2"), ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_class_weights_balance_classes():
    y = torch.tensor([0, 0, 0, 1])
    w = class_weights(y, 3)
    # N / (K · count): 4 / (3·3), 4 / (3·1), and an absent class counted as 1
    torch.testing.assert_close(w, torch.tensor([4 / 9, 4 / 3, 4 / 3]))


def _blobs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    means = rng.standard_normal((k, 16)) * 3
    return (means[truth] + rng.standard_normal((n, 16))).astype(np.float32), truth


def test_fit_learns_and_is_deterministic():
    feats, truth = _blobs(3000, 8, seed=1)
    train, val = np.arange(2500), np.arange(2500, 3000)
    cfg = LearnerConfig(max_epochs=40)
    probs = [MLPLearner(8, cfg, seed=5).fit(feats, truth, train, val, truth[val]).predict_proba(feats)
             for _ in range(2)]
    np.testing.assert_array_equal(probs[0], probs[1])
    assert probs[0].shape == (3000, 8)
    np.testing.assert_allclose(probs[0].sum(1), 1.0, atol=1e-6)
    held_out = (probs[0][val].argmax(1) == truth[val]).mean()
    assert held_out > 0.95, held_out


def test_fit_on_soft_posteriors():
    feats, truth = _blobs(2000, 5, seed=2)
    post = np.full((2000, 5), 0.05)
    post[np.arange(2000), truth] = 0.8
    train, val = np.arange(1600), np.arange(1600, 2000)
    learner = MLPLearner(5, LearnerConfig(max_epochs=30, soft=True), seed=0).fit(feats, post, train, val, truth[val])
    assert (learner.predict_proba(feats)[val].argmax(1) == truth[val]).mean() > 0.95
