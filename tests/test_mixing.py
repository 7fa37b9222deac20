"""CutMix / Mixup (luab_fast/data/mixing.py, mix_targets.py): the host draws (timm's semantics, λ corrected to the
box, modes, determinism, off epochs) and each target rule against a reference written here, sample by sample."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from luab_fast.data import mix_targets as mt
from luab_fast.data.mixing import Mixing

S = 32  # crop side


def _params(mixing: Mixing, batch: int = 8, index: int = 0, size: int = S):
    p = mixing.draw(batch, size, [0, 0, 0, index])
    return torch.from_numpy(p.lam), torch.from_numpy(p.cut), torch.from_numpy(p.box)


def _all_draws(mixing: Mixing, n: int = 200, batch: int = 8):
    ps = [mixing.draw(batch, S, [1, 2, 0, i]) for i in range(n)]
    return (np.stack([p.lam for p in ps]), np.stack([p.cut for p in ps]), np.stack([p.box for p in ps]))


# ------------------------------------------------------------------------------------------- the draws
def test_cutmix_lambda_is_the_box_area_and_boxes_are_timms():
    lam, cut, box = _all_draws(Mixing(cutmix=1.0, mode="elem"))
    yl, yh, xl, xh = np.moveaxis(box, -1, 0)
    assert cut.mean() > 0.95  # every sample mixes (prob 1); only an empty box leaves one out
    assert (0 <= yl).all() and (yh <= S).all() and (0 <= xl).all() and (xh <= S).all()
    area = (yh - yl) * (xh - xl)
    np.testing.assert_allclose(lam[cut], 1 - area[cut] / S ** 2, rtol=0, atol=1e-7)  # correct_lam
    assert (lam[~cut] == 1).all() and (area[~cut] == 0).all()
    interior = cut & (yl > 0) & (yh < S) & (xl > 0) & (xh < S)
    assert interior.sum() > 100 and ((yh - yl) == (xh - xl))[interior].all()  # rand_bbox: a square, unclipped
    clipped = cut & ((yl == 0) | (xh == S))
    assert clipped.any()  # clipped boxes exist, and their λ counts the clipped area (above)
    # the same distribution as timm's own draws (its global np.random, seeded): mean λ and how often a box clips
    from timm.data.mixup import cutmix_bbox_and_lam

    np.random.seed(0)
    timm_draws = [cutmix_bbox_and_lam((S, S), np.random.beta(1.0, 1.0)) for _ in range(lam.size)]
    timm_lam = np.array([t[1] for t in timm_draws])
    timm_clip = np.mean([t[0][0] == 0 or t[0][3] == S for t in timm_draws])
    assert abs(lam[cut].mean() - timm_lam[timm_lam < 1].mean()) < 0.02
    assert abs(clipped.sum() / cut.sum() - timm_clip) < 0.04


def test_mixup_lambda_is_beta_and_prob_picks_the_mixed_samples():
    lam, cut, _ = _all_draws(Mixing(mixup=0.4, prob=0.6, mode="elem"), n=1500)
    assert not cut.any()
    mixed = lam != 1
    assert abs(mixed.mean() - 0.6) < 0.02
    var = 1 / (4 * (2 * 0.4 + 1))  # Beta(α, α): mean 1/2, variance 1/(4(2α + 1))
    assert abs(lam[mixed].mean() - 0.5) < 0.02 and abs(lam[mixed].var() - var) < 0.01


def test_switch_prob_and_minmax():
    _, cut, _ = _all_draws(Mixing(mixup=1.0, cutmix=1.0, switch_prob=1.0, mode="elem"), n=20)
    assert cut.mean() > 0.95
    lam, cut, _ = _all_draws(Mixing(mixup=1.0, cutmix=1.0, switch_prob=0.0, mode="elem"), n=20)
    assert not cut.any() and (lam != 1).all()
    lam, cut, box = _all_draws(Mixing(cutmix_minmax=(0.25, 0.75), mode="elem"), n=50)
    sides = np.concatenate([box[..., 1] - box[..., 0], box[..., 3] - box[..., 2]])
    assert cut.all() and sides.min() >= 8 and sides.max() < 24  # rand_bbox_minmax: randint(int(S·min), int(S·max))
    assert len(np.unique(sides)) == 16


def test_modes_share_the_draw_as_timm_does():
    lam, cut, box = _params(Mixing(cutmix=1.0, mixup=1.0, mode="batch"), index=3)
    assert (lam == lam[0]).all() and (cut == cut[0]).all() and (box == box[0]).all()
    for i in range(20):
        lam, cut, box = _params(Mixing(cutmix=1.0, mixup=1.0, mode="pair"), index=i)
        assert torch.equal(lam, lam.flip(0)) and torch.equal(cut, cut.flip(0)) and torch.equal(box, box.flip(0))
    lam, _, _ = _params(Mixing(mixup=1.0, mode="elem"))
    assert len(set(lam.tolist())) == 8
    with pytest.raises(ValueError, match="the batch size must be even, got 7"):
        Mixing(mixup=1.0).draw(7, S, [0, 0, 0, 0])


def test_draws_are_keyed_by_seed_epoch_rank_batch():
    m = Mixing(cutmix=1.0, mixup=0.5, mode="elem")
    a, b = m.draw(8, S, [5, 1, 0, 7]), m.draw(8, S, [5, 1, 0, 7])
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("lam", "cut", "box"))
    for key in ([5, 1, 0, 8], [5, 2, 0, 7], [5, 1, 1, 7], [6, 1, 0, 7]):
        assert not np.array_equal(m.draw(8, S, key).lam, a.lam), key


def test_off_epochs_leave_the_batch_unmixed_with_soft_targets():
    m = Mixing(cutmix=1.0, off_epoch=2, epochs=5)
    assert [m.active(e) for e in range(6)] == [True, True, True, False, False, False]  # ReLabel: epoch >= 5 − 2
    assert Mixing(cutmix=1.0).active(10**6)
    images = torch.randn(4, 3, S, S)
    batch = {"images": images.clone(), "target": torch.tensor([1, 0, 2, 2])}
    targets = SimpleNamespace(num_classes=3, label_maps=None)
    m(batch, targets, 3, [0, 3, 0, 0], torch.from_numpy)
    assert torch.equal(batch["images"], images)
    assert torch.equal(batch["target"], torch.eye(3)[[1, 0, 2, 2]])
    m(batch, targets, 2, [0, 2, 0, 0], torch.from_numpy)
    assert not torch.equal(batch["images"], images)


def test_bad_mixing_arguments_are_named():
    for kw, what in ((dict(), "one of them > 0"), (dict(mixup=1.0, prob=2.0), "prob and switch_prob"),
                     (dict(mixup=1.0, mode="x"), "mode must be one of"), (dict(cutmix_minmax=(0.5, 0.2)),
                                                                          "cutmix_minmax must be"),
                     (dict(mixup=1.0, relabel="crop"), "relabel must be one of")):
        with pytest.raises(ValueError, match=what):
            Mixing(**kw)


# ------------------------------------------------------------------------------- the rules, by reference
def _ref_params(lam, cut, box, i):
    yl, yh, xl, xh = box[i].tolist()
    return float(lam[i]), bool(cut[i]), (yl, yh, xl, xh)


def test_images_cutmix_pastes_the_partners_box_and_mixup_blends():
    torch.manual_seed(0)
    images = torch.randn(8, 3, S, S)
    for mode in ("elem", "batch"):
        lam, cut, box = _params(Mixing(cutmix=1.0, mixup=1.0, mode=mode, prob=0.8), index=4)
        assert cut.any() and (~cut & (lam < 1)).any() if mode == "elem" else True
        out = mt.mix_images(images, lam, cut, box)
        for i in range(8):
            j = 7 - i
            want = images[i].clone()
            if cut[i]:
                yl, yh, xl, xh = box[i].tolist()
                want[:, yl:yh, xl:xh] = images[j][:, yl:yh, xl:xh]
            else:
                want = images[i] * lam[i] + images[j] * (1 - lam[i])
            torch.testing.assert_close(out[i], want, rtol=0, atol=1e-6)


def test_class_targets_mix_as_timms_mixup_target_with_smoothing_in_the_loss():
    from timm.data.mixup import mixup_target
    from timm.loss import SoftTargetCrossEntropy

    from luab_fast.ops import luab_loss

    torch.manual_seed(1)
    hard = torch.randint(0, 5, (8,))
    posterior = torch.softmax(torch.randn(8, 5), 1)
    lam, cut, box = _params(Mixing(cutmix=1.0, mixup=1.0, mode="elem"), index=2)
    for target in (hard, posterior):
        out = mt.mix_class_target(target, lam, 5)
        for i in range(8):
            a = torch.eye(5)[target[i]] if target.dim() == 1 else target[i]
            b = torch.eye(5)[target[7 - i]] if target.dim() == 1 else target[7 - i]
            torch.testing.assert_close(out[i], lam[i] * a + (1 - lam[i]) * b)
    logits = torch.randn(8, 5)
    eps = 0.1
    for lam_b in (0.3, 1.0):  # timm smooths the one-hots, then mixes; here the loss smooths the mix: the same
        mixed = mt.mix_class_target(hard, torch.full((8,), lam_b), 5)
        ours = luab_loss(logits, mixed, label_smoothing=eps)[0]
        timms = SoftTargetCrossEntropy()(logits, mixup_target(hard, 5, lam_b, eps))
        torch.testing.assert_close(ours, timms)


def _cell_in(box, r, c, h, w):
    yl, yh, xl, xh = box
    cy, cx = (r + 0.5) / h, (c + 0.5) / w
    return yl / S <= cy < yh / S and xl / S <= cx < xh / S


def test_heat_maps_paste_like_the_pixels_renormalised_and_blend_under_mixup():
    torch.manual_seed(2)
    heat = torch.rand(8, 4, 4)
    heat = heat / heat.sum((1, 2), keepdim=True)
    heat[3] = 0  # a sample without traces
    lam, cut, box = _params(Mixing(cutmix=1.0, mixup=1.0, mode="elem"), index=5)
    cut[1], box[1] = True, torch.tensor([0, S, 0, S])  # the whole image pasted: a's map is gone
    out = mt.mix_heat(heat, lam, cut, box, S)
    for i in range(8):
        lam_i, cut_i, box_i = _ref_params(lam, cut, box, i)
        j = 7 - i
        want = torch.zeros(4, 4)
        for r in range(4):
            for c in range(4):
                if cut_i:
                    want[r, c] = heat[j, r, c] if _cell_in(box_i, r, c, 4, 4) else heat[i, r, c]
                else:
                    want[r, c] = lam_i * heat[i, r, c] + (1 - lam_i) * heat[j, r, c]
        if cut_i and want.sum() > 0:
            want = want / want.sum()
        torch.testing.assert_close(out[i], want)
    assert torch.equal(out[1], heat[6] / heat[6].sum())
    empty = mt.mix_heat(torch.zeros(2, 4, 4), torch.ones(2), torch.ones(2, dtype=torch.bool),
                        torch.tensor([[0, 16, 0, 16]] * 2), S)
    assert torch.equal(empty, torch.zeros(2, 4, 4))  # nothing left: weight 0 (no NaN)


def test_click_points_keep_the_click_of_the_image_whose_region_holds_it():
    # a's click outside the box: kept; a's click inside (under b): dropped, b's click kept if b's lies inside
    point = torch.tensor([[0.1, 0.1], [0.5, 0.5], [0.5, 0.5], [0.9, 0.9], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5],
                          [0.6, 0.4]])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    box = torch.tensor([[8, 24, 8, 24]] * 8)  # the centre half of the crop
    lam = torch.tensor([0.75, 0.75, 0.75, 0.75, 0.3, 0.75, 0.75, 0.75])
    cut = torch.tensor([True, True, True, True, False, True, True, True])
    out_p, out_w = mt.mix_points(point, weight, lam, cut, box, S)
    for i in range(8):
        lam_i, cut_i, (yl, yh, xl, xh) = _ref_params(lam, cut, box, i)
        j = 7 - i

        def inside(p):
            return xl / S <= p[0] < xh / S and yl / S <= p[1] < yh / S

        if not cut_i:
            want = (point[i].tolist(), lam_i * float(weight[i]))
        elif weight[i] > 0 and not inside(point[i].tolist()):
            want = (point[i].tolist(), float(weight[i]))
        elif weight[j] > 0 and inside(point[j].tolist()):
            want = (point[j].tolist(), float(weight[j]))
        else:
            want = ([-1.0, -1.0], 0.0)
        assert [*out_p[i].tolist(), float(out_w[i])] == pytest.approx([*want[0], want[1]]), i
    assert out_w.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0, 0.3, 1.0, 1.0, 0.0])  # 7: both clicks hidden
    assert out_p[0].tolist() == pytest.approx([0.1, 0.1]) and out_p[1].tolist() == pytest.approx([0.5, 0.5])
    assert out_p[3].tolist() == [-1.0, -1.0]  # its own click has weight 0, its partner's (0.2, 0.8) is outside


# ----------------------------------------------------------------------------- ReLabel targets, region
def _maps(n=6, k=3, m=5, c=7, seed=3):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, m, m, generator=g) * 3
    indices = torch.stack([torch.randperm(c, generator=g)[:k] for _ in range(n * m * m)]).view(n, m, m, k)
    return scores, indices.permute(0, 3, 1, 2).contiguous()


def _pool_ref(scores, indices, row, box_xyxy, c):
    """ReLabel's pooling, one sample: the dense [C, M, M] map, torchvision's roi_align over the box."""
    from torchvision.ops import roi_align

    m = scores.shape[-1]
    dense = torch.zeros(c, m, m).scatter_(0, indices[row], scores[row])
    rois = torch.tensor([[0.0, *box_xyxy]]) * torch.tensor([1.0, m, m, m, m]) - torch.tensor([0, .5, .5, .5, .5])
    return roi_align(dense[None], rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=False).flatten()


def _affines():
    """crop → output affines [8, 2, 3]: identity, a shift, a rotation about the centre, a shear."""
    out = torch.eye(2, 3).repeat(8, 1, 1)
    out[1, :, 2] = torch.tensor([0.1, -0.15])
    t = math.radians(20)
    rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    out[3, :, :2], out[3, :, 2] = rot, 0.5 - rot @ torch.tensor([0.5, 0.5])
    out[6, 0, 1], out[6, 0, 2] = 0.2, -0.1
    return out


@pytest.mark.parametrize("mode,augmented", [("elem", False), ("pair", False), ("elem", True)])
def test_region_targets_pool_each_map_over_the_region_it_shows(mode, augmented):
    c = 7
    scores, indices = _maps(c=c)
    lm = SimpleNamespace(rows=torch.tensor([2, -1, 0, 5, 1, 4, 3, 0]), tensors=(scores, indices), num_classes=c,
                         box_order="xyxy")
    rows = torch.arange(8)
    crops = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0], [0.3, 0.1, 0.7, 0.9], [0.2, 0.2, 0.6, 0.6],
                          [0.0, 0.5, 0.5, 1.0], [0.25, 0.0, 1.0, 0.75], [0.1, 0.1, 0.5, 0.9], [0.4, 0.3, 1.0, 0.9]])
    flips = torch.tensor([False, True, True, False, False, True, False, True])
    fallback = torch.softmax(torch.randn(8, c), 1)
    lam, cut, box = _params(Mixing(cutmix=1.0, mixup=1.0, mode=mode), index=11)
    assert cut.sum() >= 2 and (~cut & (lam < 1)).any()  # both kinds in the batch
    affine = _affines() if augmented else None
    out = mt.region_targets(lm, rows, crops, flips, lam, cut, box, S, fallback, affine)
    for i in range(8):
        lam_i, cut_i, (yl, yh, xl, xh) = _ref_params(lam, cut, box, i)
        j = 7 - i

        def in_crop(s, rect):  # a rectangle (u0, v0, u1, v1) of the mixed image, in sample s's crop window
            u0, v0, u1, v1 = rect
            if affine is not None:  # its corners mapped back through the augmentation, their bounding box
                inv = torch.linalg.inv(torch.cat([affine[s], torch.tensor([[0.0, 0.0, 1.0]])]).double())
                pts = [(inv @ torch.tensor([u, v, 1.0], dtype=torch.float64))[:2] for u in (u0, u1) for v in (v0, v1)]
                u0, v0 = (min(max(min(float(p[k]) for p in pts), 0.0), 1.0) for k in (0, 1))
                u1, v1 = (min(max(max(float(p[k]) for p in pts), 0.0), 1.0) for k in (0, 1))
            if flips[s]:
                u0, u1 = 1 - u1, 1 - u0
            x0, y0, x1, y1 = crops[s].tolist()
            return [x0 + u0 * (x1 - x0), y0 + v0 * (y1 - y0), x0 + u1 * (x1 - x0), y0 + v1 * (y1 - y0)]

        def area(b):
            return (b[2] - b[0]) * (b[3] - b[1])

        def target(s, region):
            if lm.rows[s] < 0:
                return fallback[s]
            r = int(lm.rows[s])
            shown = in_crop(s, (0.0, 0.0, 1.0, 1.0))
            whole = _pool_ref(scores, indices, r, shown, c)
            if region == "crop":
                return whole.softmax(0)
            pasted = in_crop(s, (xl / S, yl / S, xh / S, yh / S))
            part = _pool_ref(scores, indices, r, pasted, c)
            if region == "box":
                return part.softmax(0)
            # a's crop minus the box, by area (unaugmented: the box is 1 − λ of the crop)
            return ((area(shown) * whole - area(pasted) * part) / (area(shown) - area(pasted))).softmax(0)

        a = target(i, "rest" if cut_i else "crop")
        b = target(j, "box" if cut_i else "crop")
        torch.testing.assert_close(out[i], lam_i * a + (1 - lam_i) * b, rtol=1e-5, atol=1e-5, msg=str(i))
    if augmented:  # the augmentation changes what is pooled
        plain = mt.region_targets(lm, rows, crops, flips, lam, cut, box, S, fallback)
        assert not torch.allclose(plain[3], out[3], atol=1e-3)


def test_region_equals_mix_without_cutmix():
    scores, indices = _maps()
    lm = SimpleNamespace(rows=torch.arange(6).repeat(2)[:8], tensors=(scores, indices), num_classes=7,
                         box_order="xyxy")
    crops = torch.tensor([[0.1, 0.2, 0.9, 0.8]]).repeat(8, 1)
    lam = torch.linspace(0.2, 1.0, 8)
    none = torch.zeros(8, dtype=torch.bool)
    out = mt.region_targets(lm, torch.arange(8), crops, torch.zeros(8, dtype=torch.bool), lam, none,
                            torch.zeros(8, 4, dtype=torch.int64), S, torch.zeros(8, 7))
    from luab_fast.ops import label_pool_targets

    pooled = label_pool_targets(scores, indices, crops, 7, rows=lm.rows)
    torch.testing.assert_close(out, mt.mix_class_target(pooled, lam, 7), rtol=1e-5, atol=1e-6)


def test_box_in_crop_maps_flipped_crops():
    crops = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.2, 0.4, 0.6, 0.8]])
    box = torch.tensor([[0, 16, 0, 8], [0, 16, 0, 8]])  # top half, left quarter of the mixed crop
    out = mt.box_in_crop(box, S, crops, torch.tensor([False, True]))
    torch.testing.assert_close(out, torch.tensor([[0.2, 0.4, 0.3, 0.6], [0.5, 0.4, 0.6, 0.6]]))
    assert math.isclose(float(out[1, 2] - out[1, 0]), 0.1, rel_tol=1e-6)
