"""luab_fast.patch_crowdkit() / unpatch_crowdkit(): crowd-kit's names bound to luab_fast.crowdkit's classes and back,
the way scikit-learn-intelex's patch_sklearn works: all or a subset, idempotent, originals restored, a clear error
without crowd-kit, and ``import luab_fast`` still light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pandas as pd
import pytest

crowdkit = pytest.importorskip("crowdkit.aggregation")

import luab_fast  # noqa: E402
from luab_fast import crowdkit as lf  # noqa: E402
from luab_fast.crowdkit import _patch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit", "ignore::FutureWarning:crowdkit")

PUBLIC = ("crowdkit.aggregation", "crowdkit.aggregation.classification")
DF = pd.DataFrame({"task": [1, 1, 1, 2, 2, 3, 3, 3], "worker": list("abcabcab"), "label": [0, 0, 1, 1, 1, 0, 1, 1]})


@pytest.fixture(autouse=True)
def _restore():
    """Every test starts and ends with crowd-kit's own classes."""
    luab_fast.unpatch_crowdkit()
    yield
    luab_fast.unpatch_crowdkit()


def bound(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def defining_module(name: str) -> str:
    return _patch._originals[("crowdkit.aggregation", name)].__module__


def is_ours(obj) -> bool:
    return obj.__module__.startswith("luab_fast.crowdkit")


def test_patch_replaces_every_class_everywhere():
    names = _patch.get_patch_names()
    assert {"DawidSkene", "GoldMajorityVote", "MajorityVote", "OneCoinDawidSkene", "Wawa", "ZeroBasedSkill"} <= \
        set(names)
    luab_fast.patch_crowdkit()
    for name in names:
        for module in (*PUBLIC, defining_module(name)):
            assert bound(module, name) is getattr(lf, name), f"{module}.{name}"
    from crowdkit.aggregation import DawidSkene  # what user code writes, after the patch

    assert DawidSkene is lf.DawidSkene and _patch.crowdkit_is_patched("DawidSkene")


def test_unpatch_restores_the_originals():
    originals = {(m, n): bound(m, n) for n in _patch.get_patch_names() for m in PUBLIC}
    luab_fast.patch_crowdkit()
    luab_fast.unpatch_crowdkit()
    for (module, name), original in originals.items():
        assert bound(module, name) is original and not is_ours(original), f"{module}.{name}"
    assert not _patch.crowdkit_is_patched()


def test_patching_twice_changes_nothing():
    luab_fast.patch_crowdkit()
    once = {(m, n): bound(m, n) for n in _patch.get_patch_names() for m in PUBLIC}
    table = dict(_patch._originals)
    luab_fast.patch_crowdkit()
    assert {(m, n): bound(m, n) for (m, n) in once} == once
    assert _patch._originals == table  # the originals were recorded once, not overwritten by ours
    luab_fast.unpatch_crowdkit()
    luab_fast.unpatch_crowdkit()
    assert not any(is_ours(bound(m, n)) for (m, n) in once)


def test_subset_and_partial_unpatch():
    luab_fast.patch_crowdkit(["MajorityVote", "Wawa"])
    assert bound("crowdkit.aggregation", "MajorityVote") is lf.MajorityVote
    assert bound("crowdkit.aggregation.classification", "Wawa") is lf.Wawa
    assert not is_ours(bound("crowdkit.aggregation", "DawidSkene"))
    luab_fast.unpatch_crowdkit("Wawa")
    assert not is_ours(bound("crowdkit.aggregation", "Wawa"))
    assert bound("crowdkit.aggregation", "MajorityVote") is lf.MajorityVote


def test_crowdkits_own_classes_keep_working_beside_a_subset():
    """crowd-kit's OneCoinDawidSkene calls DawidSkene._m_step through its module: patching DawidSkene alone leaves
    that module's name to crowd-kit (the public names are ours), so crowd-kit's one-coin still fits."""
    luab_fast.patch_crowdkit("DawidSkene")
    assert bound("crowdkit.aggregation", "DawidSkene") is lf.DawidSkene
    assert not is_ours(bound(defining_module("DawidSkene"), "DawidSkene"))
    theirs = crowdkit.OneCoinDawidSkene().fit(DF)
    pd.testing.assert_frame_equal(lf.OneCoinDawidSkene().fit(DF).probas_, theirs.probas_, rtol=1e-6)
    luab_fast.patch_crowdkit("OneCoinDawidSkene")  # now the whole module is ours
    assert bound(defining_module("DawidSkene"), "DawidSkene") is lf.DawidSkene


def test_patched_classes_give_crowdkits_results():
    theirs = {name: bound("crowdkit.aggregation", name)() for name in ("MajorityVote", "DawidSkene")}
    luab_fast.patch_crowdkit()
    from crowdkit.aggregation import DawidSkene, MajorityVote

    for name, ours in (("MajorityVote", MajorityVote()), ("DawidSkene", DawidSkene())):
        assert is_ours(type(ours))
        pd.testing.assert_series_equal(ours.fit_predict(DF), theirs[name].fit_predict(DF))
        pd.testing.assert_frame_equal(ours.probas_, theirs[name].probas_, rtol=1e-6)


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="cannot patch"):
        luab_fast.patch_crowdkit(["MajorityVote", "NoSuchAggregator"])
    assert not _patch.crowdkit_is_patched()


def test_clear_error_without_crowdkit(monkeypatch):
    for module in [m for m in sys.modules if m == "crowdkit" or m.startswith("crowdkit.")]:
        monkeypatch.setitem(sys.modules, module, None)  # an import of it now raises ImportError
    monkeypatch.setitem(sys.modules, "crowdkit", None)
    with pytest.raises(ImportError, match="pip install crowd-kit"):
        luab_fast.patch_crowdkit()
    with pytest.raises(ImportError, match="pip install crowd-kit"):
        _patch.get_patch_names()
    assert lf.MajorityVote().fit_predict(DF).tolist() == [0, 1, 1]  # the classes themselves need no crowd-kit


def test_import_luab_fast_stays_light():
    code = "import sys, luab_fast; print([m for m in ('pandas', 'crowdkit', 'sklearn') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import luab_fast imported {out.strip()}"
    assert luab_fast.patch_crowdkit is _patch.patch_crowdkit
    assert luab_fast.unpatch_crowdkit is _patch.unpatch_crowdkit
