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


# -- warm start ------------------------------------------------------------------------------------------------
def test_warm_start_without_shrink_or_epochs_is_the_last_model():
    """shrink 1, perturb 0 and 0 epochs: the warm start is exactly the weights it was given."""
    feats, truth = _blobs(1500, 6, seed=3)
    train, val = np.arange(1200), np.arange(1200, 1500)
    first = MLPLearner(6, LearnerConfig(max_epochs=20, calibrate="none"), seed=0).fit(feats, truth, train, val,
                                                                                     truth[val])
    cfg = LearnerConfig(calibrate="none", warm_epochs=0, warm_shrink=1.0, warm_perturb=0.0)
    again = MLPLearner(6, cfg, seed=9).fit(feats, truth, train, val, truth[val], init=first.weights())
    for a, b in zip(first.weights(), again.weights()):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(first.predict_proba(feats), again.predict_proba(feats))


@pytest.mark.parametrize("calibrate", ["temperature", "cv_3"])
def test_warm_start_shrinks_perturbs_and_learns(calibrate):
    """The default warm start (half the old weights + half a fresh init, warm_epochs epochs) ends away from both
    and still learns; with cv_3 each fold's MLP starts from its own."""
    feats, truth = _blobs(2000, 5, seed=4)
    train, val = np.arange(1600), np.arange(1600, 2000)
    first = MLPLearner(5, LearnerConfig(max_epochs=10, calibrate=calibrate), seed=0).fit(feats, truth, train, val,
                                                                                        truth[val])
    warm = MLPLearner(5, LearnerConfig(calibrate=calibrate, warm_epochs=5), seed=1).fit(
        feats, truth, train, val, truth[val], init=first.weights())
    assert len(warm.weights()) == (3 if calibrate == "cv_3" else 1)
    assert not np.array_equal(warm.weights()[0]["0.weight"], first.weights()[0]["0.weight"])
    assert (warm.predict_proba(feats)[val].argmax(1) == truth[val]).mean() > 0.95


@pytest.mark.parametrize("init,message", [
    ("not a list", "list of 1 weight dicts"),
    ([{}, {}], "list of 1 weight dicts"),
    ([{"0.weight": np.zeros((64, 3), np.float32)}], "must have the shapes"),
    (None, None),  # replaced below by weights of another width
])
def test_warm_start_refuses_foreign_weights(init, message):
    feats, truth = _blobs(600, 4, seed=5)
    train, val = np.arange(500), np.arange(500, 600)
    if init is None:  # a learner of 8 hidden units cannot start one of 64
        small = MLPLearner(4, LearnerConfig(max_epochs=1, hidden=8), seed=0).fit(feats, truth, train, val, truth[val])
        init, message = small.weights(), "must have the shapes"
    with pytest.raises(ValueError, match=message):
        MLPLearner(4, LearnerConfig(max_epochs=1), seed=0).fit(feats, truth, train, val, truth[val], init=init)
    w = MLPLearner(4, LearnerConfig(max_epochs=1), seed=0).fit(feats, truth, train, val, truth[val]).weights()
    w[0]["2.bias"] = w[0]["2.bias"] * np.nan
    with pytest.raises(ValueError, match="finite float32"):
        MLPLearner(4, LearnerConfig(max_epochs=1), seed=0).fit(feats, truth, train, val, truth[val], init=w)


@pytest.mark.parametrize("field,value", [("warm_epochs", -1), ("warm_shrink", -0.5), ("warm_perturb", float("nan"))])
def test_warm_settings_checked(field, value):
    with pytest.raises(ValueError, match=f"LearnerConfig.{field}"):
        LearnerConfig(**{field: value})
