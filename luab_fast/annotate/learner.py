"""The machine learner of the efficient-annotation seed (../shared/docs/aggregation.md §A "Learner"): an MLP on
precomputed features (one hidden layer of 64, tanh), trained on the current posteriors' argmax (or the soft
posteriors), class-balanced, Adam with lr = 1e-4·√batch and weight decay 1e-3, validated every 10 epochs
keeping the best validation loss; calibrated by temperature scaling on the clean prototypes (dropped when
it makes the validation NLL worse) or by a 3-fold cross-validation ensemble (``cv_3``, Lean's).
Its calibrated probabilities enter EM as a per-task prior.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from .._checks import is_number
from .workers import index_array


@dataclass
class LearnerConfig:
    hidden: int = 64
    batch: int = 1024
    lr_ratio: float = 1e-4
    weight_decay: float = 1e-3
    max_epochs: int = 100
    calibrate: str = "temperature"  # or "cv_3", or "none"
    soft: bool = False  # train on the soft posteriors instead of their argmax
    # stop after this many validations (every 10 epochs) without a new best loss; None = all max_epochs, as the
    # seed (which keeps the best anyway, so stopping early changes the result only if the loss would have
    # improved again later — and costs a fraction of the time at ImageNet-100 scale)
    patience: Optional[int] = 2
    # a refit warm-started from the last step's models (``MLPLearner.fit(..., init=...)``) starts from
    # warm_shrink × their weights + warm_perturb × a fresh init, and runs at most warm_epochs epochs
    warm_epochs: int = 20
    warm_shrink: float = 0.5
    warm_perturb: float = 0.5

    def __post_init__(self) -> None:  # a bad field would otherwise show up as a crash or a silent non-fit
        for name, lo in (("hidden", 1), ("batch", 1), ("max_epochs", 0), ("warm_epochs", 0)):
            _check_int(name, getattr(self, name), lo)
        if self.patience is not None:
            _check_int("patience", self.patience, 0)
        for name, positive in (("lr_ratio", True), ("weight_decay", False), ("warm_shrink", False),
                               ("warm_perturb", False)):
            v = getattr(self, name)
            if not is_number(v) or not np.isfinite(v) or v < 0 or (positive and v == 0):
                raise ValueError(f"LearnerConfig.{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                                 f"got {v!r}")
        if self.calibrate not in CALIBRATIONS:
            raise ValueError(f"LearnerConfig.calibrate must be one of {CALIBRATIONS}, got {self.calibrate!r}")
        if not isinstance(self.soft, (bool, np.bool_)):
            raise ValueError(f"LearnerConfig.soft must be True or False, got {self.soft!r}")


CALIBRATIONS = ("temperature", "cv_3", "none")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"LearnerConfig.{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Tanh(nn.Module):
    """tanh as 2·sigmoid(2x) − 1: the same function to ~2e-7, and ~3× faster on the CPU, where torch's tanh of a
    1024×64 batch took 169 µs (scalar) against 51 µs — 7% of a training step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x * 2.0) * 2.0 - 1.0  # out of place: autograd (reference_grads) keeps sigmoid's output


def _mlp(d: int, k: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, hidden), Tanh(), nn.Linear(hidden, k))


def class_weights(y: torch.Tensor, k: int) -> torch.Tensor:
    """Class-balanced loss weights (the seed samples class-balanced batches): N / (K · count), from hard labels
    [B] or soft targets [B, K]."""
    counts = torch.bincount(y, minlength=k).float() if y.dim() == 1 else y.sum(0)
    return (counts.sum() / (k * counts.clamp_min(1.0))).float()


def reference_grads(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of the weighted cross-entropy by autograd: the reference ``mlp_grads`` is tested against."""
    model.zero_grad()
    nn.functional.cross_entropy(model(xb), yb, weight=weight).backward()
    return [p.grad.clone() for p in model.parameters()]


@torch.no_grad()
def mlp_grads(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    """The same gradients written out (W1, b1, W2, b2): no autograd graph, in-place where it can be. A training
    step at batch 1024 is a few small matmuls, and autograd's bookkeeping was ~10% of it.

    Loss as ``F.cross_entropy(logits, y, weight)``: hard labels → Σ w_y·nll / Σ w_y, so dlogits = w_y (p − e_y) /
    Σ w_y; soft targets t → mean over the batch of −Σ_c w_c t_c log p_c, so dlogits = ((Σ_c w_c t_c) p − w ⊙ t) / B."""
    lin1, _, lin2 = model
    h = torch.addmm(lin1.bias, xb, lin1.weight.t())
    h = torch.sigmoid(h.mul_(2.0)).mul_(2.0).sub_(1.0)  # Tanh above
    g = torch.addmm(lin2.bias, h, lin2.weight.t()).softmax(1)
    if yb.dim() == 1:
        wy = weight[yb]
        s = wy / wy.sum()
        g.mul_(s[:, None])
        g[torch.arange(len(yb)), yb] -= s
    else:
        wt = yb * weight
        g.mul_(wt.sum(1, keepdim=True)).sub_(wt).div_(len(yb))
    grad_w2, grad_b2 = g.t() @ h, g.sum(0)
    d = (g @ lin2.weight).mul_(1.0 - h * h)
    return [d.t() @ xb, d.sum(0), grad_w2, grad_b2]


def _adam(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    try:  # one fused kernel per step instead of ~12 small ops per parameter (torch >= 2.4 on the CPU)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _train(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, k: int, cfg: LearnerConfig,
           gen: torch.Generator, init: Optional[dict] = None) -> nn.Module:
    """One MLP: cross-entropy with class-balanced weights (the seed samples class-balanced), best val loss.
    ``init``: the last step's weights to warm-start from (``cfg.warm_epochs`` epochs) instead of a fresh MLP."""
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # drawn either way: same streams
    model = _mlp(x.shape[1], k, cfg.hidden)
    best, best_state, stale, epochs = float("inf"), None, 0, cfg.max_epochs
    if init is not None:
        # shrink and perturb (Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020): a plain warm
        # start keeps the early steps' mistakes. On the demo (efficient_annotation, seed 0) plain warm starts of 10
        # or 20 epochs reached ds_model's final accuracy at 0.96-1.04 labels per image, cold ones at 0.88; half
        # the old weights plus half a fresh init, 20 epochs: 0.80, 0.96, 0.96 on seeds 0-2 (cold 0.88, 0.88, 0.96)
        fresh = model.state_dict()
        model.load_state_dict({name: cfg.warm_shrink * torch.from_numpy(v) + cfg.warm_perturb * fresh[name]
                               for name, v in init.items()})
        epochs = cfg.warm_epochs
    params = list(model.parameters())
    opt = _adam(params, lr=cfg.lr_ratio * cfg.batch ** 0.5, weight_decay=cfg.weight_decay)
    weight = class_weights(y, k)
    n = x.shape[0]
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        xs, ys = x.index_select(0, perm), y.index_select(0, perm)  # one gather an epoch: then contiguous batches
        for i in range(0, n, cfg.batch):
            for p, g in zip(params, mlp_grads(model, xs[i:i + cfg.batch], ys[i:i + cfg.batch], weight)):
                p.grad = g
            opt.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            val = _val_loss(model, xv, yv)
            if val < best:
                best, best_state, stale = val, {k_: v.clone() for k_, v in model.state_dict().items()}, 0
            else:
                stale += 1
                if cfg.patience is not None and stale >= cfg.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


@torch.no_grad()
def _val_loss(model: nn.Module, xv: torch.Tensor, yv: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(model(xv), yv))


def _temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature minimising the validation NLL (LBFGS on log T); 1 when scaling does not help."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=50)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp())
    before = float(nn.functional.cross_entropy(logits, labels))
    after = float(nn.functional.cross_entropy(logits / t, labels))
    return t if np.isfinite(t) and after <= before else 1.0


@contextmanager
def _one_thread():
    """A 64-unit MLP is far too small to split across threads: with two, each step's tiny kernels spent most of
    their time in thread hand-offs (measured 2.3 s → 14.9 s for one fit on this 2-core machine when the other
    core was busy), so the learner runs on one and gives the setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_features(features, name: str) -> int:
    """Rows of ``features``: real numbers [N, D], finite (a NaN would turn every weight into NaN)."""
    if not isinstance(features, np.ndarray) or features.ndim != 2 or features.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a 2-D numpy array of real numbers [N, D], got "
                         f"{getattr(features, 'shape', type(features).__name__)} {getattr(features, 'dtype', '')}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} must be finite: row {int(np.argmax(~np.isfinite(features).all(1)))} holds NaN or inf")
    return features.shape[0]


class MLPLearner:
    """``fit(features, targets, train_idx, val_idx, val_labels)`` then ``predict_proba(features)`` [N, K]."""

    def __init__(self, n_classes: int, config: Optional[LearnerConfig] = None, seed: int = 0) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if config is not None and not isinstance(config, LearnerConfig):
            raise ValueError(f"config must be a LearnerConfig, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        self.k, self.cfg = int(n_classes), config or LearnerConfig()
        self.gen = torch.Generator().manual_seed(seed)
        self.models: list[nn.Module] = []
        self.temperature = 1.0

    def fit(self, features: np.ndarray, targets: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
            val_labels: np.ndarray, init: Optional[list[dict]] = None) -> "MLPLearner":
        """``features`` [N, D]; ``targets`` class indices [N] or soft targets [N, K]; ``train_idx`` and ``val_idx``
        indices into the N rows; ``val_labels`` [len(val_idx)] class indices. ``init``: an earlier learner's
        ``weights()`` to warm-start from (same D, hidden size, K and calibration), or None for fresh MLPs."""
        n = _check_features(features, "features")
        t = np.asarray(targets)
        if t.shape not in ((n,), (n, self.k)) or t.dtype.kind not in "biuf":
            raise ValueError(f"targets must be class indices [{n}] or soft targets [{n}, {self.k}], got shape "
                             f"{t.shape} dtype {t.dtype}")
        if t.ndim == 2 and not np.isfinite(t).all():
            raise ValueError("targets must be finite")
        if t.ndim == 1:
            index_array(t, "targets", self.k)
        index_array(train_idx, "train_idx", n)
        v = index_array(val_idx, "val_idx", n)
        labels = index_array(val_labels, "val_labels", self.k)
        if labels.size != v.size:
            raise ValueError(f"val_labels must have one label per val_idx entry ({v.size}), got {labels.size}")
        if init is not None:
            self._check_init(init, features.shape[1])
        with _one_thread():
            return self._fit(features, targets, train_idx, val_idx, val_labels, init)

    def weights(self) -> list[dict]:
        """Each fitted MLP's parameters as float32 arrays ({name: array}), what ``fit(init=...)`` takes."""
        if not self.models:
            raise RuntimeError("MLPLearner is not fitted yet")
        return [{name: v.detach().numpy().copy() for name, v in m.state_dict().items()} for m in self.models]

    def _check_init(self, init, d: int) -> None:
        n_models = 3 if self.cfg.calibrate == "cv_3" else 1
        want = {name: tuple(v.shape) for name, v in _mlp(d, self.k, self.cfg.hidden).state_dict().items()}
        if not isinstance(init, list) or len(init) != n_models:
            raise ValueError(f"init must be a list of {n_models} weight dicts (MLPLearner.weights()), got "
                             f"{type(init).__name__} of {len(init) if isinstance(init, list) else '?'}")
        for w in init:
            got = {name: tuple(np.shape(v)) for name, v in w.items()} if isinstance(w, dict) else None
            if got != want:
                raise ValueError(f"init weights must have the shapes {want} (features D={d}, hidden={self.cfg.hidden}, "
                                 f"K={self.k}), got {got}")
            if not all(np.asarray(v).dtype == np.float32 and np.isfinite(v).all() for v in w.values()):
                raise ValueError("init weights must be finite float32 arrays")

    def _fit(self, features: np.ndarray, targets: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
             val_labels: np.ndarray, init: Optional[list[dict]]) -> "MLPLearner":
        x = torch.from_numpy(np.ascontiguousarray(features[train_idx], np.float32))
        t = torch.from_numpy(np.asarray(targets[train_idx]))
        y = t.float() if self.cfg.soft else (t.argmax(1) if t.dim() == 2 else t).long()
        xv = torch.from_numpy(np.ascontiguousarray(features[val_idx], np.float32))
        yv = torch.from_numpy(np.asarray(val_labels, np.int64))
        starts = init if init is not None else [None] * 3
        if self.cfg.calibrate == "cv_3":  # Lean: average the probabilities of a 3-fold ensemble
            folds = torch.randperm(len(x), generator=self.gen) % 3
            self.models = [_train(x[folds != f], y[folds != f], x[folds == f], (y[folds == f] if y.dim() == 1 else
                                  y[folds == f].argmax(1)), self.k, self.cfg, self.gen, starts[f]) for f in range(3)]
            self.temperature = 1.0
        else:
            model = _train(x, y, xv, yv, self.k, self.cfg, self.gen, starts[0])
            self.models = [model]
            with torch.no_grad():
                self.temperature = _temperature(model(xv), yv) if self.cfg.calibrate == "temperature" else 1.0
        return self

    @torch.no_grad()
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if not self.models:
            raise RuntimeError("MLPLearner is not fitted yet")
        _check_features(features, "features")
        d = self.models[0][0].in_features
        if features.shape[1] != d:
            raise ValueError(f"features must have the {d} columns the learner was fitted on, got {features.shape[1]}")
        x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
        with _one_thread():
            probs = torch.stack([(m(x) / self.temperature).softmax(1) for m in self.models]).mean(0)
            return probs.double().numpy()
