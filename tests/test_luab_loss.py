"""luab_loss (luab_fast/ops/luab_loss.py, luab_fast/kernels/luab_loss.py): each term against PyTorch's own
losses and a hand-computed case; the "triton" backend (run under TRITON_INTERPRET=1 on the CPU, compiled on
a GPU) against autograd of the reference, gradients included; gradcheck, opcheck, torch.compile; bad input.
Triton shapes stay small (the interpreter costs ~0.1 s a launch). The kernel's sm_90 compile is in
tests/test_kernels_compile.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import backend_device, backend_mark, backends

from luab_fast.kernels import HAS_TRITON, triton_runs_on
from luab_fast.ops._dispatch import pick_backend
from luab_fast.ops.luab_loss import LossRows, LUABLoss, _luab_loss_op, luab_loss, luab_loss_reference

needs_triton = backend_mark("triton")
BACKENDS = backends("reference", "triton")  # luab_loss has no "cpu" backend
device_of = backend_device


def make(B=4, C=11, h=3, w=5, seed=0, soft=False, dtype=torch.float32, device="cpu"):
    """Predictions (leaves requiring grad) and targets, as keyword arguments of luab_loss."""
    gen = torch.Generator().manual_seed(seed)
    # soft rows are probability rows (the op rejects others, see test_soft_targets_must_be_probability_rows)
    target = (torch.rand(B, C, generator=gen).softmax(1) if soft else torch.randint(0, C, (B,), generator=gen))
    heat_target = torch.rand(B, h, w, generator=gen) * (torch.rand(B, h, w, generator=gen) < 0.5)
    heat_target[0] = 0  # one empty map: excluded from the heat term
    args = dict(logits=torch.randn(B, C, generator=gen) * 3, target=target,
                point_pred=torch.randn(B, 2, generator=gen) * 1.5, point_target=torch.randn(B, 2, generator=gen),
                point_weight=torch.rand(B, generator=gen), heat_pred=torch.randn(B, h, w, generator=gen) * 2,
                heat_target=heat_target)
    for k in ("logits", "point_pred", "heat_pred"):
        args[k] = args[k].to(dtype)
    return {k: (v.to(device).requires_grad_(k in ("logits", "point_pred", "heat_pred"))) for k, v in args.items()}


PREDS = ("logits", "point_pred", "heat_pred")


def loss_and_grads(fn, args, **options):
    """(loss, parts, gradients of the predictions) of one fresh call."""
    args = {k: v.detach().clone().requires_grad_(k in PREDS) for k, v in args.items()}
    loss, parts = fn(**args, **options)
    loss.backward()
    return loss, parts, [args[k].grad for k in PREDS]


# ------------------------------------------------------------------------------------------ the formulas
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_terms_equal_torch_losses(backend, soft, eps):
    a = make(5, 13, soft=soft, device=device_of(backend))
    loss, parts = luab_loss(**a, lambda_point=0.7, lambda_heat=1.9, label_smoothing=eps, backend=backend)
    a = {k: v.detach().cpu().double() if v.is_floating_point() else v.cpu() for k, v in a.items()}
    cls = F.cross_entropy(a["logits"], a["target"], label_smoothing=eps)
    per_point = F.smooth_l1_loss(a["point_pred"], a["point_target"], beta=1.0, reduction="none").mean(1)
    point = (a["point_weight"] * per_point).sum() / a["point_weight"].sum()
    q = a["heat_target"].flatten(1)
    q = q / q.sum(1, keepdim=True).clamp_min(1e-300)
    kl = F.kl_div(a["heat_pred"].flatten(1).log_softmax(1), q, reduction="none").sum(1)
    heat = kl[1:].mean()  # map 0 is empty
    assert set(parts) == {"cls", "point", "heat"} and loss.dtype == torch.float32
    for got, want in ((parts["cls"], cls), (parts["point"], point), (parts["heat"], heat),
                      (loss, cls + 0.7 * point + 1.9 * heat)):
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_case(backend):
    dev = device_of(backend)
    # uniform prediction over 2x2, target on two opposite cells: KL = Σ q log(q/p) = log(0.5 / 0.25) = log 2
    loss, parts = luab_loss(torch.zeros(2, 3, device=dev), torch.tensor([0, 2], device=dev),
                            torch.tensor([[0.5, 3.0], [0.0, 0.0]], device=dev), torch.zeros(2, 2, device=dev),
                            torch.tensor([1.0, 3.0], device=dev), torch.zeros(2, 2, 2, device=dev),
                            torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]], device=dev),
                            backend=backend)
    # smooth-L1: (0.5²/2 + (3 − 0.5)) / 2 = 1.3125 for sample 0 (weight 1), 0 for sample 1 (weight 3)
    want = {"cls": math.log(3), "point": 1.3125 / 4, "heat": math.log(2)}
    assert {k: float(v) for k, v in parts.items()} == pytest.approx(want, rel=1e-6)
    assert float(loss) == pytest.approx(sum(want.values()), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_weights_and_empty_maps_give_zero_terms(backend):
    a = make(3, 7, device=device_of(backend))
    a["point_weight"] = torch.zeros_like(a["point_weight"])
    a["heat_target"] = torch.zeros_like(a["heat_target"])
    loss, parts, (gx, gp, gh) = loss_and_grads(luab_loss, a, backend=backend)
    assert float(parts["point"]) == 0.0 and float(parts["heat"]) == 0.0
    assert torch.equal(gp, torch.zeros_like(gp)) and torch.equal(gh, torch.zeros_like(gh))
    torch.testing.assert_close(loss, parts["cls"], rtol=0, atol=0)
    assert torch.isfinite(gx).all()


# ---------------------------------------------------------------------------- both backends, gradients
@needs_triton
@pytest.mark.parametrize("B,C,h,w", [(1, 1, 1, 1), (2, 37, 3, 5), (5, 50, 7, 7), (3, 2, 1, 7), (2, 4099, 2, 3)])
@pytest.mark.parametrize("soft", [False, True])
def test_triton_equals_reference_autograd(B, C, h, w, soft):
    dev = device_of("triton")
    a = make(B, C, h, w, seed=B * C, soft=soft, device=dev)
    if C > 4096:  # the max in the second class block: the online logsumexp must rescale what came before
        a["logits"] = a["logits"].detach().index_fill(1, torch.tensor([C - 1], device=dev), 30.0)
    opts = dict(lambda_point=0.5, lambda_heat=2.0, label_smoothing=0.1)
    got = loss_and_grads(luab_loss, a, backend="triton", **opts)
    want = loss_and_grads(luab_loss_reference, a, **opts)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    for k in want[1]:
        torch.testing.assert_close(got[1][k], want[1][k], rtol=1e-5, atol=1e-5)
    for g, r in zip(got[2], want[2]):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


@needs_triton
@pytest.mark.parametrize("soft", [False, True])
def test_op_outputs_agree_between_backends(soft):
    """The op's raw outputs, per-sample terms and unscaled gradients included (those of an empty heat map
    are scaled by m_b = 0 in the loss, so only this test sees them)."""
    a = make(4, 9, 2, 3, seed=3, soft=soft, device=device_of("triton"))
    args = [a[k].detach() for k in ("logits", "target", "point_pred", "point_target", "point_weight", "heat_pred",
                                    "heat_target")]
    got = LossRows(*_luab_loss_op(*args, 0.2, "triton", True, True))
    want = LossRows(*_luab_loss_op(*args, 0.2, "reference", True, True))
    assert float(got.heat_mask[0]) == 0.0 and float(got.heat_rows[0]) == 0.0  # the empty map: mask 0, KL 0
    for name in LossRows._fields:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_reference_backend_closed_form_equals_autograd():
    a = make(4, 9, 2, 3, soft=True)
    got = loss_and_grads(luab_loss, a, backend="reference", label_smoothing=0.3, lambda_heat=0.5)
    want = loss_and_grads(luab_loss_reference, a, label_smoothing=0.3, lambda_heat=0.5)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    for g, r in zip(got[2], want[2]):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_gradcheck_reference_float64():
    a = make(3, 5, 2, 3, dtype=torch.float64, soft=True)
    a["target"] = a["target"].double()

    def f(x, p, z):
        return luab_loss_reference(x, a["target"], p, a["point_target"], a["point_weight"], z, a["heat_target"],
                                   0.6, 1.7, 0.15)[0]

    assert torch.autograd.gradcheck(f, (a["logits"], a["point_pred"], a["heat_pred"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    a = make(3, 5, 2, 3, dtype=torch.float64, device=device_of(backend))
    # the interpreted kernel costs ~0.1 s a call: one random direction (fast mode) instead of all 33 inputs
    fast = backend == "triton" and not torch.cuda.is_available()

    def f(x, p, z):
        return luab_loss(x, a["target"], p, a["point_target"], a["point_weight"], z, a["heat_target"], 0.6, 1.7,
                         0.15, backend=backend)[0]

    assert torch.autograd.gradcheck(f, (a["logits"], a["point_pred"], a["heat_pred"]), fast_mode=fast)


@needs_triton
def test_bfloat16_on_triton():
    # the interpreter runs bfloat16 loads/stores (numpy holds them as float32 bit patterns); compute is float32
    a = make(4, 20, 3, 3, dtype=torch.bfloat16, device=device_of("triton"))
    loss, parts, grads = loss_and_grads(luab_loss, a, backend="triton", label_smoothing=0.1)
    assert loss.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    up = {k: v.detach().float() if k in PREDS else v for k, v in a.items()}  # the same bf16 values, widened
    w_loss, w_parts, w_grads = loss_and_grads(luab_loss_reference, up, label_smoothing=0.1)
    torch.testing.assert_close(loss, w_loss, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, w_grads):
        torch.testing.assert_close(g.float(), r, rtol=1e-2, atol=1e-3)  # the gradients are rounded to bf16


# ------------------------------------------------------------------------------------- edges, options
@pytest.mark.parametrize("backend", BACKENDS)
def test_omitted_terms(backend):
    a = make(3, 6, device=device_of(backend))
    full_loss, full_parts = luab_loss(**a, backend=backend)
    only_cls = dict(logits=a["logits"], target=a["target"])
    for drop, keys in (((), {"cls", "point", "heat"}), (("point",), {"cls", "heat"}), (("heat",), {"cls", "point"}),
                       (("point", "heat"), {"cls"})):
        kw = dict(only_cls)
        if "point" not in drop:
            kw.update(point_pred=a["point_pred"], point_target=a["point_target"], point_weight=a["point_weight"])
        if "heat" not in drop:
            kw.update(heat_pred=a["heat_pred"], heat_target=a["heat_target"])
        loss, parts = luab_loss(**kw, backend=backend)
        assert set(parts) == keys
        want = full_parts["cls"] + sum(full_parts[k] for k in keys - {"cls"})
        torch.testing.assert_close(loss.detach(), want, rtol=1e-6, atol=1e-6)
        for k in keys:
            torch.testing.assert_close(parts[k], full_parts[k], rtol=0, atol=0)
    loss, _ = luab_loss(**only_cls, backend=backend)
    loss.backward()
    assert a["logits"].grad is not None and a["point_pred"].grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_is_an_error_naming_the_batch_size(backend):
    """F.cross_entropy's mean of an empty batch is NaN, which would poison a run: the op says B=0 instead."""
    a = {k: v.detach()[:0].requires_grad_(k in PREDS) for k, v in make(3, 6, device=device_of(backend)).items()}
    with pytest.raises(ValueError, match="logits must hold at least one sample.*got B=0"):
        luab_loss(**a, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_soft_targets_must_be_probability_rows(dtype):
    """Rows rounded to the dtype from a distribution pass; a negative value or a row off 1 does not."""
    a = make(3, 50, soft=True)
    good = a["target"].to(dtype)
    luab_loss(**{**a, "target": good}, backend="reference")
    for bad in (good * 0 - 1, good * 1.1, good.clone().index_fill_(1, torch.tensor([0]), -0.01)):
        with pytest.raises(ValueError, match=r"target \(soft\) must hold probability rows"):
            luab_loss(**{**a, "target": bad}, backend="reference")
    luab_loss(**{**a, "target": good * 1.1}, backend="reference", validate=False)  # the fast path skips it


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_and_targets_get_no_gradient(backend):
    a = make(3, 8, soft=True, device=device_of(backend))
    with torch.no_grad():
        quiet, _ = luab_loss(**a, backend=backend)
    for k in ("target", "point_target", "point_weight", "heat_target"):
        a[k].requires_grad_(True)
    loss, _ = luab_loss(**a, backend=backend)
    torch.testing.assert_close(loss.detach(), quiet, rtol=0, atol=0)
    loss.backward()
    assert all(a[k].grad is None for k in ("target", "point_target", "point_weight", "heat_target"))
    assert all(a[k].grad is not None for k in PREDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_validate_false_skips_the_checks(backend):
    a = make(3, 8, device=device_of(backend))
    bad = a["logits"].detach().clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits must be finite"):
        luab_loss(**{**a, "logits": bad}, backend=backend)
    loss, _ = luab_loss(**{**a, "logits": bad}, backend=backend, validate=False)
    assert math.isnan(float(loss.detach()))
    if backend == "triton":  # an out-of-range class is read nowhere: its row's loss is NaN
        loss, _ = luab_loss(**{**a, "target": torch.tensor([0, 8, 1], device=bad.device)}, backend=backend,
                            validate=False)
        assert math.isnan(float(loss.detach()))


def test_check_finite_is_the_former_name_of_validate():
    """The old keyword still works (luab_fast/train, benchmarks), with a DeprecationWarning; not both at once."""
    a = make(3, 8)
    bad = a["logits"].detach().clone()
    bad[1, 2] = float("nan")
    with pytest.warns(DeprecationWarning, match="check_finite= is deprecated, pass validate="):
        loss, _ = luab_loss(**{**a, "logits": bad}, backend="reference", check_finite=False)
    assert math.isnan(float(loss.detach()))
    with pytest.warns(DeprecationWarning, match="check_finite= is deprecated"):
        with pytest.raises(ValueError, match="logits must be finite"):
            luab_loss(**{**a, "logits": bad}, backend="reference", check_finite=True)
    with pytest.warns(DeprecationWarning, match="LUABLoss\\(\\): check_finite= is deprecated"):
        module = LUABLoss(check_finite=False)
    assert module.validate is False and math.isnan(float(module(**{**a, "logits": bad})[0].detach()))
    with pytest.raises(TypeError, match="both validate= and its former name check_finite="):
        luab_loss(**a, validate=False, check_finite=False)


def test_bad_input_names_the_argument():
    a = {k: v.detach() for k, v in make(3, 6).items()}
    nan = a["point_target"].clone()
    nan[0, 1] = float("inf")
    cases = [("logits", dict(logits=a["logits"][0])), ("logits", dict(logits=a["logits"].long())),
             ("target", dict(target=a["target"][:2])), ("target", dict(target=a["target"].int())),
             ("target", dict(target=torch.rand(3, 5))), ("target", dict(target=torch.tensor([0, 6, 1]))),
             ("target", dict(target=torch.tensor([0, -1, 1]))),
             ("target", dict(target=torch.full((3, 6), float("nan")))),
             ("point_pred", dict(point_pred=a["point_pred"][:2])), ("point_pred", dict(point_pred=a["point_pred"].T)),
             ("point_pred", dict(point_pred=None)), ("point_weight", dict(point_weight=None)),
             ("point_target", dict(point_target=nan)), ("point_weight", dict(point_weight=-a["point_weight"] - 1)),
             ("point_weight", dict(point_weight=a["point_weight"].long())),
             ("heat_pred", dict(heat_pred=a["heat_pred"][:, 0])), ("heat_pred", dict(heat_pred=a["heat_pred"][:2])),
             ("heat_target", dict(heat_target=a["heat_target"][:, :2])), ("heat_target", dict(heat_target=None)),
             ("heat_target", dict(heat_target=a["heat_target"] - 0.5)),
             ("heat_pred", dict(heat_pred=a["heat_pred"].clone().fill_(float("-inf")))),
             ("label_smoothing", dict(label_smoothing=1.5)), ("label_smoothing", dict(label_smoothing=-0.1)),
             ("lambda_point", dict(lambda_point=-1.0)), ("lambda_heat", dict(lambda_heat=float("nan"))),
             ("lambda_heat", dict(lambda_heat=float("inf"))), ("backend", dict(backend="cpu"))]
    luab_loss(**a)
    for name, change in cases:
        with pytest.raises(ValueError, match=name):
            luab_loss(**{**a, **change})
    with pytest.raises(ValueError, match="label_smoothing"):
        LUABLoss(label_smoothing=2.0)


def test_dispatch():
    """luab_loss's rule: the shared picker without a "cpu" backend, the heat map's size as ``fits``."""
    cpu, cuda, names = torch.device("cpu"), torch.device("cuda"), ("reference", "triton")
    assert pick_backend(cpu, None, backends=names) == "reference"  # even with _C built
    assert pick_backend(cuda, None, backends=names) == ("triton" if HAS_TRITON else "reference")
    assert pick_backend(cuda, None, backends=names, fits=False) == "reference"  # too big for the one-vector map
    if HAS_TRITON:
        import importlib

        kernel = importlib.import_module("luab_fast.kernels.luab_loss")
        op = importlib.import_module("luab_fast.ops.luab_loss")  # the package exports a function of that name

        assert op.MAX_HEAT_CELLS == kernel.MAX_HEAT_CELLS
    if triton_runs_on("cpu"):
        with pytest.raises(ValueError, match="heat_pred must have h·w <= 4096 cells for backend='triton', got 4160"):
            luab_loss(**make(2, 3, 64, 65), backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_matches_function(backend):
    a = make(3, 6, soft=True, device=device_of(backend))
    module = LUABLoss(0.3, 0.8, 0.05, backend=backend)
    loss, parts = module(**a)
    want, want_parts = luab_loss(**a, lambda_point=0.3, lambda_heat=0.8, label_smoothing=0.05, backend=backend)
    torch.testing.assert_close(loss, want, rtol=0, atol=0)
    assert "lambda_point=0.3" in repr(module) and set(parts) == set(want_parts)


# --------------------------------------------------------------------------------- torch.library, compile
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    a = make(3, 7, 2, 3, device=device_of(backend))
    torch.library.opcheck(_luab_loss_op, (a["logits"], a["target"], a["point_pred"], a["point_target"],
                                          a["point_weight"], a["heat_pred"], a["heat_target"], 0.1, backend, True,
                                          True))
    s = make(2, 5, soft=True, dtype=torch.float64, device=device_of(backend))
    torch.library.opcheck(_luab_loss_op, (s["logits"].detach(), s["target"], None, None, None, s["heat_pred"].detach(),
                                          s["heat_target"], 0.0, backend, False, False))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_training_step(backend):
    dev = device_of(backend)
    a = {k: v.detach() for k, v in make(4, 10, 3, 3, device=dev).items()}
    features = torch.randn(4, 16, device=dev)
    heads = torch.nn.ModuleDict({"cls": torch.nn.Linear(16, 10), "point": torch.nn.Linear(16, 2),
                                 "heat": torch.nn.Linear(16, 9)}).to(dev)
    criterion = LUABLoss(0.5, 2.0, 0.1, backend=backend)

    def step(f):  # the forward: the compiled graph's backward is AOT autograd's, run by loss.backward()
        return criterion(heads["cls"](f), a["target"], heads["point"](f), a["point_target"], a["point_weight"],
                         heads["heat"](f).view(4, 3, 3), a["heat_target"])

    loss, parts = torch.compile(step, fullgraph=True, backend="aot_eager")(features)
    loss.backward()
    got = [p.grad.clone() for p in heads.parameters()]
    heads.zero_grad()
    want_loss, want_parts = step(features)
    want_loss.backward()
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-6)
    for k in want_parts:
        torch.testing.assert_close(parts[k], want_parts[k], rtol=1e-6, atol=1e-6)
    for g, w in zip(got, [p.grad for p in heads.parameters()]):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
