"""Hostile input to ``python -m luab_fast.annotate`` and its public API (issue 17): every bad argument or file
ends in one ``error:`` line naming it, exit 2 (argument) or 1 (data), no traceback, an earlier run's outputs in
``--out`` untouched and no temporary left; a good run writes through unique temporaries with the umask's mode."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from luab_fast import _cli
from luab_fast.annotate import cli as annotate_cli
from luab_fast.annotate.workers import DEFAULT_DIR, ENV_DIR

from .conftest import leftovers, run_process, snapshot

# a run of well under a second: 60 images of 3 classes, one HIT size that spends the budget in a few steps
TINY = ["--synthetic", "60:3", "--budget", "1", "--epochs", "1", "--workers", "5", "--hit-size", "10",
        "--hits-per-step", "2", "--method", "ds_model"]
OUTPUTS = {"curve.csv", "curve.png", "labels_ds_model.csv", "posteriors_ds_model.csv"}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """The outputs of an earlier good run, made once; each test works on its own copy."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    assert _cli.run(annotate_cli.main, TINY + ["--out", str(out)]) == 0
    assert set(os.listdir(out)) == OUTPUTS
    return out


@pytest.fixture
def out(earlier, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(earlier, dst)
    return dst


def unchanged(out, before) -> None:
    assert snapshot(out) == before, "an earlier run's outputs were changed"
    assert leftovers(out.parent) == []


# --- arguments: exit 2, checked before any work or write -------------------------------------------------

ARGUMENTS = [  # (replacements for TINY's options, fragments the message must hold)
    (["--budget", "-1"], ["--budget", "-1", "(0, 3]"]),  # the report: wrote every task as class 0, then failed
    (["--budget", "nan"], ["--budget", "nan"]),
    (["--budget", "inf"], ["--budget", "inf"]),
    (["--budget", "1e12"], ["--budget", "1000000000000"]),
    (["--budget", "0"], ["--budget", "got 0"]),
    (["--budget", "0.001"], ["--budget", "under one label", "60 images"]),
    (["--budget", "lots"], ["--budget", "invalid float"]),
    (["--workers", "0"], ["--workers", "got 0"]),
    (["--workers", str(10**9)], ["--workers", "1..100000"]),
    (["--hit-size", "0"], ["--hit-size", "got 0"]),
    (["--hit-size", "5000"], ["--hit-size", "at most 2000"]),
    (["--hits-per-step", "0"], ["--hits-per-step", "got 0"]),
    (["--epochs", "-1"], ["--epochs", "got -1"]),
    (["--epochs", str(10**9)], ["--epochs", "0..10000"]),
    (["--warm-epochs", "-1"], ["--warm-epochs", "got -1"]),
    (["--warm-epochs", str(10**9)], ["--warm-epochs", "0..10000"]),
    (["--learner-start", "hot"], ["--learner-start", "invalid choice"]),
    (["--exploration", "1.5"], ["--exploration", "[0, 1]"]),
    (["--exploration", "nan"], ["--exploration", "nan"]),
    (["--separability", "inf"], ["--separability", "inf"]),
    (["--separability", "-1"], ["--separability", "-1"]),
    (["--seed", "-1"], ["--seed", "got -1"]),
    (["--seed", str(2**32)], ["--seed", "2**32"]),
    (["--synthetic", f"{10**12}:5"], ["--synthetic", "memory", "fewer images"]),
    (["--synthetic", "0:3"], ["--synthetic", "N=0"]),
    (["--synthetic", "60:1"], ["--synthetic", "K=1"]),
    (["--synthetic", "1000:200"], ["--synthetic", "K=200", "100"]),
    (["--synthetic", "60x3"], ["--synthetic", "N:K", "60x3"]),
    (["--method", "ds_model", "ds_model"], ["--method", "ds_model", "more than once"]),
    (["--method", "oracle"], ["--method", "invalid choice"]),
    (["--features", "x.npy"], ["--features", "--truth", "together"]),
]


def with_options(base: list[str], new: list[str]) -> list[str]:
    """``base`` with the options in ``new`` replaced (or added)."""
    args, i = list(base), 0
    while i < len(new):
        opt, j = new[i], i + 1
        while j < len(new) and not new[j].startswith("--"):
            j += 1
        if opt in args:
            k = args.index(opt) + 1
            while k < len(args) and not args[k].startswith("--"):
                k += 1
            del args[args.index(opt):k]
        args += new[i:j]
        i = j
    return args


@pytest.mark.parametrize("new,fragments", ARGUMENTS, ids=[" ".join(a)[:40] for a, _ in ARGUMENTS])
def test_bad_argument_is_a_usage_error_before_any_write(cli, out, new, fragments):
    before = snapshot(out)
    cli("annotate", *with_options(TINY, new), "--out", out).failed_with(2, *fragments)
    unchanged(out, before)


def test_bad_budget_creates_nothing(cli, tmp_path):
    """The reported case: nothing written, not even the folder."""
    cli("annotate", *with_options(TINY, ["--budget", "-1"]), "--out", tmp_path / "new").failed_with(2, "--budget")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["file", "under_file", "output_is_folder"])
def test_unusable_out(cli, out, where):
    before = snapshot(out)
    target = {"file": out / "curve.csv", "under_file": out / "curve.csv" / "x", "output_is_folder": out}[where]
    if where == "output_is_folder":
        (out / "labels_ds_model.csv").unlink()
        (out / "labels_ds_model.csv").mkdir()
        before = snapshot(out)
    fragment = "labels_ds_model.csv" if where == "output_is_folder" else "curve.csv"
    cli("annotate", *TINY, "--out", target).failed_with(2, "--out", fragment)
    unchanged(out, before)


# --- data files: exit 1, naming the file ---------------------------------------------------------------

def _feats(n=60, d=8):
    return np.random.default_rng(0).standard_normal((n, d))


def _truth(n=60):
    return np.arange(n) % 3


def _save(path, arr, **kw):
    with open(path, "wb") as f:
        np.save(f, arr, **kw)


def _savez(path, **arrays):
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to a name
        np.savez(f, **arrays)


DATA = {  # name: (which file is bad, writer of the bad file, fragments)
    "nan": ("features", lambda p: _save(p, np.where(np.eye(60, 8) > 0, np.nan, _feats())), ["row 0", "nan"]),
    "inf": ("features", lambda p: _save(p, np.r_[_feats()[:59], np.full((1, 8), np.inf)]), ["row 59", "inf"]),
    "beyond_float32": ("features", lambda p: _save(p, _feats() * 1e300), ["float32"]),
    "complex": ("features", lambda p: _save(p, _feats().astype(complex)), ["complex128", "real numbers"]),
    "strings": ("features", lambda p: _save(p, _feats().astype(str)), ["dtype <u", "real numbers"]),
    "objects": ("features", lambda p: _save(p, _feats().astype(object), allow_pickle=True), ["python objects"]),
    "1d": ("features", lambda p: _save(p, _feats()[:, 0]), ["shape (60,)", "[n images, d features]"]),
    "3d": ("features", lambda p: _save(p, _feats()[:, :, None]), ["shape (60, 8, 1)"]),
    "empty": ("features", lambda p: _save(p, np.zeros((0, 8))), ["shape (0, 8)"]),
    "pickle": ("features", lambda p: p.write_bytes(pickle.dumps(_feats())), ["not a .npy file", "never loaded"]),
    "npz": ("features", lambda p: _savez(p, a=_feats()), [".npz archive"]),
    "text": ("features", lambda p: p.write_text("1,2,3\n"), ["not a .npy file"]),
    "truncated": ("features", lambda p: (_save(p, _feats()), p.write_bytes(p.read_bytes()[:300])),
                  ["not a readable .npy array"]),
    "empty_file": ("features", lambda p: p.write_bytes(b""), ["not a .npy file"]),
    "missing": ("features", lambda p: None, ["no such file"]),
    "folder": ("features", lambda p: p.mkdir(), ["is a folder"]),
    "negative": ("truth", lambda p: _save(p, _truth() - 1), ["entry 0 is -1", "class index"]),
    "fractional": ("truth", lambda p: _save(p, _truth() + 0.5), ["entry 0 is 0.5", "integer"]),
    "nan_truth": ("truth", lambda p: _save(p, np.r_[_truth()[:-1], np.nan]), ["entry 59 is nan"]),
    "out_of_range": ("truth", lambda p: _save(p, _truth() * 1000), ["entry 1 is 1000", "0..99"]),
    "short": ("truth", lambda p: _save(p, _truth(59)), ["59 entries", "60 rows"]),
    "one_class": ("truth", lambda p: _save(p, np.zeros(60, np.int64)), ["class 0", "two classes"]),
    "string_truth": ("truth", lambda p: _save(p, _truth().astype(str)), ["dtype <u", "integer class"]),
    "2d_truth": ("truth", lambda p: _save(p, _truth()[:, None]), ["shape (60, 1)"]),
    "truth_missing": ("truth", lambda p: None, ["no such file"]),
}


@pytest.mark.parametrize("case", sorted(DATA))
def test_bad_data_file(cli, out, tmp_path, case):
    which, write, fragments = DATA[case]
    feats, truth = tmp_path / "feats.npy", tmp_path / "truth.npy"
    _save(feats, _feats())
    _save(truth, _truth())
    bad = feats if which == "features" else truth
    bad.unlink()
    write(bad)
    before = snapshot(out)
    cli("annotate", *TINY[2:], "--features", feats, "--truth", truth, "--out", out).failed_with(
        1, f"--{which}", bad.name, *fragments)  # TINY[2:]: all but --synthetic
    unchanged(out, before)


def test_good_files_run_as_before(cli, tmp_path):
    """Integer-valued float truth and int features are data too; the run matches the array-API result."""
    feats, truth = tmp_path / "f.npy", tmp_path / "t.npy"
    _save(feats, (_feats() * 10).astype(np.int16))
    _save(truth, _truth().astype(np.float32))
    cli("annotate", *TINY[2:], "--features", feats, "--truth", truth, "--out", tmp_path / "o").ok()
    labels = pd.read_csv(tmp_path / "o" / "labels_ds_model.csv")
    assert labels["task"].tolist() == list(range(60)) and labels["label"].between(0, 2).all()


# --- the AMT worker data under $LUAB_FAST_AMT_DIR: exit 1 ------------------------------------------------

def _json_edit(edit):
    def write(root):
        raw = json.loads((DEFAULT_DIR / "group_workers.json").read_text())
        (root / "group_workers.json").write_text(json.dumps(edit(raw)))
    return write


def _set_count(raw, value):
    raw["group_workers"]["0"][0][0][0] = value
    return raw


AMT = {
    "no_folder": (lambda root: shutil.rmtree(root), ["group_workers.json", "not found"]),
    "bad_json": (lambda root: (root / "group_workers.json").write_text('{"imagenet100": ['), ["JSONDecodeError"]),
    "binary": (lambda root: (root / "group_workers.json").write_bytes(b"\xff\xfe\x00"), ["UnicodeDecodeError"]),
    "a_list": (lambda root: (root / "group_workers.json").write_text("[1, 2]"), ["group_workers.json"]),
    "groups_a_list": (_json_edit(lambda raw: {**raw, "group_workers": [1]}), ["AttributeError"]),
    "deep": (lambda root: (root / "group_workers.json").write_text("[" * 100_000 + "]" * 100_000), ["Recursion"]),
    "negative": (_json_edit(lambda raw: _set_count(raw, -1)), ["group 0", "non-negative"]),
    "huge": (_json_edit(lambda raw: _set_count(raw, 1e300)), ["group 0", "non-negative"]),
    "no_classes": (_json_edit(lambda raw: {**raw, "imagenet100": [], "imagenet100_name": []}), ["at least 2"]),
    "groups_folder": (lambda root: ((root / "groups.txt").unlink(), (root / "groups.txt").mkdir()),
                      ["groups.txt", "is a folder"]),
    "groups_binary": (lambda root: (root / "groups.txt").write_bytes(b"\xff\xfe\x00"), ["groups.txt"]),
}


@pytest.mark.parametrize("case", sorted(AMT))
def test_corrupt_amt_data(cli, out, tmp_path, monkeypatch, case):
    root = tmp_path / "amt"
    root.mkdir()
    for name in ("group_workers.json", "groups.txt"):
        shutil.copy(DEFAULT_DIR / name, root / name)
    write, fragments = AMT[case]
    write(root)
    monkeypatch.setenv(ENV_DIR, str(root))
    before = snapshot(out)
    cli("annotate", *TINY, "--out", out).failed_with(1, "AMT worker data", *fragments)
    unchanged(out, before)


# --- writes ---------------------------------------------------------------------------------------------

def test_failure_mid_run_keeps_the_earlier_outputs(cli, out, monkeypatch):
    """The first method's results are not written before the second fails: files of two runs never mix."""
    real, calls = annotate_cli.run_method, []

    def second_fails(name, *a, **kw):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return real(name, *a, **kw)

    monkeypatch.setattr(annotate_cli, "run_method", second_fails)
    before = snapshot(out)
    # another seed: the first method's files would differ from the earlier run's if they were written
    cli("annotate", *with_options(TINY, ["--method", "ds_model", "lean", "--seed", "7"]), "--out", out).failed_with(
        1, "RuntimeError", "injected", "LUAB_FAST_DEBUG=1")
    unchanged(out, before)


def test_failed_write_replaces_nothing(cli, out, monkeypatch):
    """A full disk while writing the last output (the figure) leaves every earlier output as it was."""
    import errno

    def full(curve, path):
        path.write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(annotate_cli, "_plot", full)
    before = snapshot(out)
    cli("annotate", *with_options(TINY, ["--seed", "7"]), "--out", out).failed_with(1, "no space left")
    unchanged(out, before)


def test_good_run_keeps_users_files_and_takes_the_umask(cli, out):
    """The old fixed temporaries (``curve.csv.tmp``, ``curve.tmp.png``) were a user's files to clobber; outputs
    get the umask's mode, not mkstemp's 0600."""
    mine = {"curve.csv.tmp": b"mine", "curve.tmp.png": b"mine too", "labels_ds_model.csv.tmp": b"and this"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    old = os.umask(0o027)
    try:
        cli("annotate", *with_options(TINY, ["--seed", "7"]), "--out", out).ok()
    finally:
        os.umask(old)
    assert set(os.listdir(out)) == OUTPUTS | set(mine)
    assert all((out / name).read_bytes() == data for name, data in mine.items())
    for name in OUTPUTS:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_module_entry_point_uses_the_error_policy(tmp_path):
    """``python -m luab_fast.annotate`` (not only ``main``): exit 2, one message, no traceback."""
    run_process("annotate", "--budget", "-1", "--out", tmp_path / "o", timeout=60).failed_with(2, "--budget")
    assert not (tmp_path / "o").exists()


# --- fuzz: numeric options ------------------------------------------------------------------------------

def mostly(valid, hostile):
    """Five draws in six valid, so that about a quarter of the runs, with eight options, get to run."""
    return st.tuples(st.integers(0, 5), valid, hostile).map(lambda t: t[2] if t[0] == 0 else t[1])


HOSTILE_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1, 0, 1e12, 3.5]))
HOSTILE_INTS = st.one_of(st.integers(-(2**40), 0), st.sampled_from([2001, 10**9, 2**32]))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(budget=mostly(st.floats(0.05, 3.0), HOSTILE_NUMBERS), exploration=mostly(st.floats(0, 1), HOSTILE_NUMBERS),
       separability=mostly(st.floats(0, 1000), HOSTILE_NUMBERS), workers=mostly(st.integers(1, 12), HOSTILE_INTS),
       hit_size=mostly(st.integers(1, 2000), HOSTILE_INTS), hits=mostly(st.integers(1, 10**9), HOSTILE_INTS),
       epochs=mostly(st.integers(0, 2), st.sampled_from([-1, 10**9])), seed=mostly(st.integers(0, 2**20),
                                                                                   HOSTILE_INTS),
       greedy=st.booleans())
def test_fuzz_numeric_options(cli, tmp_path_factory, budget, exploration, separability, workers, hit_size, hits,
                              epochs, seed, greedy):
    """Any numbers: a run that completes with valid outputs, or one usage error naming an option."""
    out = tmp_path_factory.mktemp("fuzz") / "o"
    args = ["--synthetic", "40:3", "--method", "ds_model", "--budget", repr(budget), "--exploration",
            repr(exploration), "--separability", repr(separability), "--workers", workers, "--hit-size", hit_size,
            "--hits-per-step", hits, "--epochs", epochs, "--seed", seed, "--sampler", "greedy" if greedy else "random"]
    res = cli("annotate", *args, "--out", out)
    event(f"exit {res.status}")
    assert "Traceback" not in res.err
    if res.status == 0:
        assert set(os.listdir(out)) == OUTPUTS
        curve = pd.read_csv(out / "curve.csv")
        assert len(curve) >= 1 and curve["accuracy"].between(0, 1).all()
        assert 1 <= curve["labels"].iloc[-1] <= 3 * 40
        post = pd.read_csv(out / "posteriors_ds_model.csv").drop(columns="task").to_numpy()
        assert np.isfinite(post).all() and np.allclose(post.sum(1), 1, atol=1e-5)
    else:
        res.failed_with(2)
        line = [ln for ln in res.err.splitlines() if "error:" in ln]
        assert len(line) == 1 and any(opt in line[0] for opt in ("--budget", "--exploration", "--separability",
                                                                "--workers", "--hit-size", "--hits-per-step",
                                                                "--epochs", "--seed"))
        assert not out.exists() and leftovers(out.parent) == []


# --- the public Python API --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem():
    from luab_fast.aggregate.bayes import homogeneous_prior
    from luab_fast.annotate import SimulatedWorkers, load_amt, pooled_counts, structured_workers
    from luab_fast.annotate.synthetic import synthetic_problem

    amt = load_amt()
    classes = list(amt.groups[0][:3])
    feats, truth = synthetic_problem(60, 3, seed=0)
    workers = SimulatedWorkers(structured_workers(amt, classes, n_workers=5))
    return feats, truth, workers, homogeneous_prior(pooled_counts(amt, classes), 10.0)


def _sampler(n=60, w=5):
    from luab_fast.annotate import RandomSampler

    return RandomSampler(n, w, hit_size=10, n_hits_per_step=2)


RUN_METHOD = {  # what to change in run_method's arguments -> the name the message must hold
    "negative_budget": (lambda a: {**a, "budget": -1}, "budget"),
    "float_budget": (lambda a: {**a, "budget": 1.5}, "budget"),
    "nan_features": (lambda a: {**a, "features": np.where(np.eye(60, 64) > 0, np.nan, a["features"])}, "features"),
    "short_features": (lambda a: {**a, "features": a["features"][:59]}, "features"),
    "truth_out_of_range": (lambda a: {**a, "truth": a["truth"] + 3}, "truth"),
    "float_truth": (lambda a: {**a, "truth": a["truth"] + 0.5}, "truth"),
    "sampler_size": (lambda a: {**a, "sampler": _sampler(61)}, "sampler"),
    "sampler_workers": (lambda a: {**a, "sampler": _sampler(60, 6)}, "sampler"),
    "alpha_shape": (lambda a: {**a, "alpha": a["alpha"][:2, :2]}, "classes"),
    "alpha_nan": (lambda a: {**a, "alpha": np.full((3, 3), np.nan)}, "alpha"),
    "negative_seed": (lambda a: {**a, "seed": -1}, "seed"),
    "learner_risk": (lambda a: {**a, "learner_risk": float("nan")}, "learner_risk"),
    "workers_type": (lambda a: {**a, "workers": object()}, "workers"),
    "learner_start": (lambda a: {**a, "learner_start": "hot"}, "learner_start"),
}


@pytest.mark.parametrize("case", sorted(RUN_METHOD))
def test_run_method_checks_its_arguments_first(problem, case):
    from luab_fast.annotate import run_method

    feats, truth, workers, alpha = problem
    change, name = RUN_METHOD[case]
    kw = change(dict(features=feats, truth=truth, workers=workers, sampler=_sampler(), alpha=alpha, budget=60,
                     seed=0, learner_risk=0.1))
    calls = []
    with pytest.raises(ValueError, match=name):
        run_method("efficient_annotation", on_step=calls.append, **kw)
    assert calls == []  # refused before the first step


API = {  # a call on a public object -> the name its ValueError must hold
    "config_batch": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).LearnerConfig(batch=0), "batch"),
    "config_lr": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).LearnerConfig(lr_ratio=float("nan")),
                  "lr_ratio"),
    "config_calibrate": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).LearnerConfig(calibrate="tmp"),
                         "calibrate"),
    "learner_classes": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).MLPLearner(1), "n_classes"),
    "config_warm_epochs": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).LearnerConfig(warm_epochs=1.5),
                           "warm_epochs"),
    "config_warm_shrink": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).LearnerConfig(
        warm_shrink=float("inf")), "warm_shrink"),
    "greedy_exploration": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).GreedySampler(
        10, 2, n_hits_per_step=1, exploration="lots"), "exploration"),
    "risk_strings": (lambda: _sampler().set_risk(["x"] * 60), "risk"),
    "synthetic_seed": (lambda: __import__("luab_fast.annotate.synthetic", fromlist=["x"]).synthetic_problem(
        10, 2, seed=-1), "seed"),
    "synthetic_separability": (lambda: __import__("luab_fast.annotate.synthetic", fromlist=["x"]).synthetic_problem(
        10, 2, separability="far"), "separability"),
    "matrices_strings": (lambda: __import__("luab_fast.annotate", fromlist=["x"]).SimulatedWorkers([["a"]]), "cms"),
}


@pytest.mark.parametrize("case", sorted(API))
def test_public_api_names_the_bad_argument(case):
    call, name = API[case]
    with pytest.raises(ValueError, match=name):
        call()


def test_learner_refuses_nan_and_foreign_indices(problem):
    from luab_fast.annotate import LearnerConfig, MLPLearner

    feats, truth, _, _ = problem
    learner = MLPLearner(3, LearnerConfig(max_epochs=1))
    with pytest.raises(ValueError, match="features"):
        learner.fit(np.where(np.eye(60, 64) > 0, np.nan, feats), truth, np.arange(30), np.arange(30, 60), truth[30:])
    with pytest.raises(ValueError, match="train_idx"):
        learner.fit(feats, truth, np.arange(55, 65), np.arange(10), truth[:10])
    learner.fit(feats, truth, np.arange(30), np.arange(30, 60), truth[30:])
    with pytest.raises(ValueError, match="columns"):
        learner.predict_proba(feats[:, :10])


def test_workers_seed_and_replay_files(tmp_path):
    from luab_fast.annotate import ReplayWorkers, load_amt, structured_workers

    amt = load_amt()
    with pytest.raises(ValueError, match="seed"):
        structured_workers(amt, list(amt.groups[0][:3]), n_workers=5, seed=2**32 - 2)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    for path in (tmp_path, tmp_path / "bin.csv", tmp_path / "none.csv"):
        with pytest.raises(_cli.DataError, match=path.name):
            ReplayWorkers.from_csv(path)
