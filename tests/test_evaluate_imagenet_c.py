"""ImageNet-C (luab_fast.evaluate.kinds_imagenet_c): the layout in both release forms, CE / mCE / relative mCE
against values computed by hand, hostile folders and error tables."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.evaluate.kinds_imagenet_c import (
    ALEXNET_CLEAN_ERR,
    ALEXNET_ERR,
    CORRUPTIONS,
    SEVERITIES,
    corruption_errors,
    read_imagenet_c,
)

WNIDS = ("n01440764", "n01443537")


def _layout(root, corruptions, grouped=False, severities=SEVERITIES):
    for c in corruptions:
        base = root / ("noise" if grouped else "") / c
        for s in severities:
            for k, wnid in enumerate(WNIDS):
                d = base / str(s) / wnid
                d.mkdir(parents=True)
                for i in range(k + 1):
                    Image.new("RGB", (8, 8), (s * 40, i * 50, 0)).save(d / f"ILSVRC2012_val_{i:08d}.JPEG")
    return root


def test_alexnet_errors_give_mce_100_and_relative_mce_100():
    errors = {(c, s): ALEXNET_ERR[c] for c in CORRUPTIONS for s in SEVERITIES}
    out = corruption_errors(errors, clean_error=ALEXNET_CLEAN_ERR)
    assert out["mce"] == pytest.approx(100.0) and out["relative_mce"] == pytest.approx(100.0)
    assert all(out[f"ce/{c}"] == pytest.approx(100.0) for c in CORRUPTIONS)


def test_ce_and_relative_ce_by_hand():
    rng = np.random.default_rng(0)
    errors = {(c, s): float(rng.uniform(0.2, 0.9)) for c in CORRUPTIONS for s in SEVERITIES}
    clean = 0.25
    out = corruption_errors(errors, clean_error=clean)
    ce, rel = [], []
    for c in CORRUPTIONS:
        total = sum(errors[(c, s)] for s in SEVERITIES)
        ce.append(100 * total / (5 * ALEXNET_ERR[c]))  # Σ_s E / Σ_s E_AlexNet, AlexNet's Σ = 5 × its mean
        rel.append(100 * (total - 5 * clean) / (5 * ALEXNET_ERR[c] - 5 * ALEXNET_CLEAN_ERR))
        assert out[f"error/{c}"] == pytest.approx(total / 5)
        assert out[f"error/{c}/3"] == errors[(c, 3)]
    assert out["mce"] == pytest.approx(np.mean(ce)) and out["relative_mce"] == pytest.approx(np.mean(rel))
    halved = corruption_errors({k: ALEXNET_ERR[k[0]] / 2 for k in errors})
    assert halved["mce"] == pytest.approx(50.0) and "relative_mce" not in halved


def test_subset_and_extras_give_no_mce():
    errors = {("fog", s): 0.5 for s in SEVERITIES} | {("saturate", s): 0.3 for s in SEVERITIES}
    out = corruption_errors(errors)
    assert out["ce/fog"] == pytest.approx(100 * 0.5 / ALEXNET_ERR["fog"])
    assert out["error/saturate"] == pytest.approx(0.3) and "ce/saturate" not in out
    assert "mce" not in out


@pytest.mark.parametrize("errors, match", [
    ({("fog", 1): 0.5}, "lacks severities \\[2, 3, 4, 5\\]"),
    ({("fog", 6): 0.5}, "severity 1..5"),
    ({("rain", 1): 0.5}, "corruption"),
    ({("fog", s): 1.5 for s in SEVERITIES}, "error fraction"),
    ({}, "empty"),
])
def test_hostile_error_tables(errors, match):
    with pytest.raises(ValueError, match=match):
        corruption_errors(errors)


@pytest.mark.parametrize("grouped", [False, True])
def test_read_layout_flat_and_grouped(tmp_path, grouped):
    _layout(tmp_path, ["shot_noise", "gaussian_noise"], grouped=grouped)
    splits = read_imagenet_c(tmp_path)
    assert [(s.corruption, s.severity) for s in splits] == [(c, s) for c in ("gaussian_noise", "shot_noise")
                                                            for s in SEVERITIES]
    assert splits[0].wnids == (WNIDS[0], WNIDS[1], WNIDS[1]) and len(splits[0].files) == 3
    assert splits[0].files[0].endswith(f"gaussian_noise/1/{WNIDS[0]}/ILSVRC2012_val_00000000.JPEG")


def test_hostile_layouts(tmp_path):
    _layout(tmp_path / "a", ["fog"], severities=(1, 2, 3, 4))
    with pytest.raises(DataError, match="a/fog must hold severity folders 1..5"):
        read_imagenet_c(tmp_path / "a")
    _layout(tmp_path / "b", ["fog"])
    (tmp_path / "b" / "fog" / "severity6").mkdir()
    with pytest.raises(DataError, match="severity6"):
        read_imagenet_c(tmp_path / "b")
    (tmp_path / "c" / "rain" / "1").mkdir(parents=True)
    with pytest.raises(DataError, match="c/rain is neither a corruption"):
        read_imagenet_c(tmp_path / "c")
    _layout(tmp_path / "d", ["fog"])
    for f in (tmp_path / "d" / "fog" / "3").rglob("*.JPEG"):
        f.unlink()
    with pytest.raises(DataError, match="d/fog/3 holds no images"):
        read_imagenet_c(tmp_path / "d")
    with pytest.raises(DataError, match="not a folder"):
        read_imagenet_c(tmp_path / "missing")
