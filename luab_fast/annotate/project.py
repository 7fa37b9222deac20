"""A real labelling project: the online loop of ``loop.run_method`` split at its step boundaries, with the
state kept on disk between calls (``python -m luab_fast.annotate next``).

Round r ingests the labels that came back for round r − 1's ``next.csv`` and runs what a simulation step runs
once its labels are in (``loop.refit_step``: EM warm-started from the last round, the learner, EM again), then the
first half of the next step (``loop.sample_step``): the tasks to send. Round 0 only samples. The random stream,
the sampler's counts, the posteriors and the learner's probabilities are saved, so a project driven round by round
draws the same numbers as ``run_method`` with ``ReplayWorkers`` and ``prototype_idx`` = the project's gold set.

Workers. The method's sampler builds HITs (``hit_size`` tasks for one worker) and picks a worker for each; a crowd
platform picks its own workers, so ``next.csv`` lists the tasks and their HIT and the pick is not used — the
simulation with ``ReplayWorkers`` ignores it the same way. The pick still draws from the random stream, over the
workers under the per-worker cap among ``workers`` slots, so the project keeps the simulation's worker count:
the slots are the real worker ids in order of first appearance, each counted against the cap with the labels it
sent. A label from a worker past ``workers`` distinct ids is reported and skipped. The per-worker cap cannot be
enforced on a platform (set it there too); a worker at the cap stops the sampler counting it as available, as in
the simulation, and ``workers.csv`` flags it.

Disk layout of ``DIR``: ``luab_project.json`` (settings, fixed at creation), ``tasks.csv``, ``features.npy``,
``gold.csv`` (if given), ``CURRENT`` (the name of the current round's folder) and ``round-NNNN/`` (its state and
outputs). A round is written to a hidden temporary folder, renamed to ``round-NNNN``, and only then ``CURRENT``
is replaced (atomically): a round interrupted at any point leaves the last good one current. The outputs in
``DIR`` itself are hard links to the current round's, each replaced atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .._atomic import atomic_path, make_temp_dir, write_text
from .._cli import DataError, UsageError
from ..aggregate import BayesAggregator
from ..aggregate.bayes import predefined_prior
from .learner import LearnerConfig
from .loop import METHODS, refit_step, sample_step
from .project_io import Answers
from .samplers import RandomSampler

PROJECT_FILE = "luab_project.json"
CURRENT = "CURRENT"
OUTPUTS = ("next.csv", "done.csv", "labels.csv", "posteriors.csv", "workers.csv", "round.png")
VERSION = 1
LEARNER_FILE = "learner.npz"  # the round's MLP weights, "<model>/<parameter>"


@dataclass(frozen=True)
class Settings:
    """Fixed when the project is created; ``luab_project.json`` holds them."""

    method: str
    n_classes: int
    class_names: Optional[list[str]] = None
    prior_strength: float = 10.0  # the seed's strength of the predefined homogeneous worker prior
    risk_threshold: float = 0.1
    max_per_task: int = 3
    max_per_worker: int = 2000
    hit_size: int = 40
    workers: int = 100  # worker slots: the most distinct workers the project takes labels from
    epochs: int = 50
    learner_risk: float = 0.1
    seed: int = 0
    # each round's learner starts from the last round's ("warm", up to warm_epochs epochs) or afresh ("cold", up
    # to epochs, as the seed and the simulation's default): warm keeps a round at ImageNet-100 scale within seconds
    learner_start: str = "warm"
    warm_epochs: int = 20

    def check(self) -> "Settings":
        if self.method not in METHODS:
            raise UsageError(f"--method: expected one of {', '.join(sorted(METHODS))}, got {self.method!r}")
        for name, lo in (("n_classes", 2), ("max_per_task", 1), ("max_per_worker", 1), ("hit_size", 1),
                         ("workers", 1), ("epochs", 0), ("warm_epochs", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UsageError(f"--{name.replace('_', '-')}: expected an integer >= {lo}, got {v!r}")
        for name in ("risk_threshold", "learner_risk"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise UsageError(f"--{name.replace('_', '-')}: expected a number in [0, 1], got {v!r}")
        if self.learner_start not in ("warm", "cold"):
            raise UsageError(f"--learner-start: expected warm or cold, got {self.learner_start!r}")
        if not (np.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise UsageError(f"--prior-strength: expected a number > 0, got {self.prior_strength!r}")
        if self.max_per_worker < self.hit_size:
            raise UsageError(f"--max-per-worker {self.max_per_worker} is below --hit-size {self.hit_size}: no "
                             "worker could take a HIT")
        return self

    def prior(self) -> np.ndarray:
        return predefined_prior(self.n_classes, strength=self.prior_strength)


@dataclass
class State:
    """Everything a round changes. Arrays: ``labels`` (task, worker, label) int64 in ingestion order; ``post`` and
    ``learner_prob`` float64 [N, K]; the sampler's ``task_counts``, ``worker_counts``, ``risk``; ``next`` the tasks
    sent out (HIT after HIT)."""

    round: int
    rng: dict
    worker_ids: list[str]
    ingested: dict[str, dict]  # sha256 of an export -> {file, round, used, skipped}
    history: list[dict]
    batch: int
    labels: tuple[np.ndarray, np.ndarray, np.ndarray]
    post: np.ndarray
    learner_prob: Optional[np.ndarray]
    learner_weights: Optional[list[dict]]  # the last round's MLP(s) (MLPLearner.weights()): a warm start's start
    task_counts: np.ndarray
    worker_counts: np.ndarray
    risk: np.ndarray
    next: np.ndarray
    next_hit: np.ndarray  # the HIT of each task in ``next``: one worker each
    report: list[str] = field(default_factory=list)  # this round's ingestion notes, for the summary


@dataclass
class Project:
    root: Path
    settings: Settings
    task_ids: list[str]
    features: Optional[np.ndarray]
    gold: tuple[np.ndarray, np.ndarray]  # task indices, their labels
    state: State
    sources: dict  # sha256 of the files the project was created from (tasks, features, gold)

    # -- creation and loading ------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, task_ids: list[str], features: Optional[np.ndarray], settings: Settings,
               gold: Optional[pd.DataFrame], batch: int, sources: dict) -> "Project":
        settings.check()
        N, K = len(task_ids), settings.n_classes
        if features is not None and features.shape[0] != N:
            raise DataError(f"features have {features.shape[0]} rows but --tasks lists {N} tasks; expected one row "
                            "per task, in the tasks file's order")
        method = METHODS[settings.method]
        if method.learner and features is None:
            raise UsageError(f"--method {settings.method} trains a learner on image features: give --features or "
                             "--images with --model")
        gold_idx, gold_labels = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if gold is not None:
            gold_idx, gold_labels = _gold(gold, task_ids, settings)
        elif method.learner and method.val == "prototypes":
            raise UsageError(f"--method {settings.method} validates its learner on clean images (the paper's "
                             "prototypes, ~10 per class): give --gold FILE (task,label)")
        W = settings.workers
        rng = np.random.default_rng(settings.seed)
        state = State(round=0, rng={}, worker_ids=[], ingested={}, history=[], batch=batch,
                      labels=(np.zeros(0, np.int64),) * 3, post=np.full((N, K), 1.0 / K), learner_prob=None,
                      learner_weights=None,
                      task_counts=np.zeros(N, np.int64), worker_counts=np.zeros(W, np.int64), risk=np.ones(N),
                      next=np.zeros(0, np.int64), next_hit=np.zeros(0, np.int64))
        proj = cls(Path(root), settings, list(task_ids), features, (gold_idx, gold_labels), state, sources)
        sampler = proj._sampler(batch)
        if not sampler.stop():
            state.next, state.next_hit = _hits(*sampler.next_step(rng))
        state.rng = rng.bit_generator.state
        state.history.append(proj._progress())
        return proj

    @classmethod
    def load(cls, root: Path) -> "Project":
        root = Path(root)
        try:
            meta = json.loads((root / PROJECT_FILE).read_text())
            cur = (root / CURRENT).read_text().strip()
            st = json.loads((root / cur / "state.json").read_text())
            arrays = np.load(root / cur / "arrays.npz", allow_pickle=False)
            post = np.load(root / cur / "posteriors.npy", allow_pickle=False)
            lp_path = root / cur / "learner_prob.npy"
            learner_prob = np.load(lp_path, allow_pickle=False) if lp_path.exists() else None
            learner_weights = _load_weights(root / cur / LEARNER_FILE)
            tasks = pd.read_csv(root / "tasks.csv", dtype=str, keep_default_na=False)["task"].tolist()
            feats = np.load(root / "features.npy", allow_pickle=False) if (root / "features.npy").exists() else None
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"--project {root}: the project's files cannot be read ({type(e).__name__}: "
                            f"{str(e)[:200]}); expected a folder made by `python -m luab_fast.annotate next`") from None
        if meta.get("version") != VERSION:
            raise DataError(f"--project {root}: project format {meta.get('version')!r}; this luab_fast reads {VERSION}")
        # a project saved before learner_start existed ran its learner cold: it goes on as it began
        settings = Settings(**{"learner_start": "cold", **meta["settings"]})
        state = State(round=st["round"], rng=st["rng"], worker_ids=st["worker_ids"], ingested=st["ingested"],
                      history=st["history"], batch=st["batch"],
                      labels=(arrays["task"], arrays["worker"], arrays["label"]), post=post, learner_prob=learner_prob,
                      learner_weights=learner_weights, task_counts=arrays["task_counts"],
                      worker_counts=arrays["worker_counts"], risk=arrays["risk"],
                      next=arrays["next"], next_hit=arrays["next_hit"])
        gold = (np.asarray(meta["gold_idx"], np.int64), np.asarray(meta["gold_labels"], np.int64))
        return cls(root, settings, tasks, feats, gold, state, meta["sources"])

    # -- one round -----------------------------------------------------------------------------------------------
    def advance(self, exports: list[Answers], batch: int) -> bool:
        """Ingests ``exports`` and runs one round; False (and nothing changed) when no new label came in: the
        same files again, or only rows that were skipped."""
        st, s = self.state, self.settings
        st.report = []
        fresh = []
        for ans in exports:
            seen = st.ingested.get(ans.digest)
            if seen is not None:
                st.report.append(f"{ans.path}: already ingested in round {seen['round']} (as {seen['file']}); "
                                 "not counted again")
            elif any(a.digest == ans.digest for a in fresh):
                st.report.append(f"{ans.path}: given twice; read once")
            else:
                fresh.append(ans)
        if not fresh:
            return False
        t_new, w_new, z_new, workers, notes = self._validate(fresh)
        if t_new.size == 0:
            st.report.append("no usable label in the new files: nothing changed")
            return False
        N, K, W = len(self.task_ids), s.n_classes, s.workers
        rng = np.random.default_rng()
        rng.bit_generator.state = st.rng
        sampler = self._sampler(batch)
        sampler.update(t_new, w_new)
        data = tuple(np.concatenate([a, b]) for a, b in zip(st.labels, (t_new, w_new, z_new)))
        method = METHODS[s.method]
        agg = BayesAggregator(prior=s.prior(), criterion=method.criterion, max_iter=10)
        if st.round > 0:  # the last round's fit: its labels and final posteriors (all partial_fit warm-starts from)
            agg.max_iter = 0  # one pass to hold the labels; its posteriors are replaced by the saved ones
            agg.fit(st.labels, n_classes=K, n_tasks=N, n_workers=W)
            agg.posteriors_ = st.post
            agg.max_iter = 10
        cfg = LearnerConfig(max_epochs=s.epochs, calibrate=method.calibrate, warm_epochs=s.warm_epochs)
        val = self.gold
        if method.val == "random" and val[0].size == 0:  # Lean draws a labelled subset of the prototypes' size
            val = (np.zeros(10 * K, np.int64), np.zeros(10 * K, np.int64))  # (the seed's 10 a class): size only
        post, learner_prob, _, weights = refit_step(
            method, agg, self.features, data, (t_new, w_new, z_new), st.learner_prob, val, rng, s.seed + st.round, cfg,
            s.learner_risk, "warm", (N, W, K), learner_init=st.learner_weights if s.learner_start == "warm" else None)
        risk = 1.0 - post.max(1)
        sampler.set_risk(risk)
        nxt, nxt_hit = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if not sampler.stop():
            nxt, nxt_hit = _hits(*sample_step(sampler, agg, post, s.prior(), rng))
        for ans in fresh:
            st.ingested[ans.digest] = {"file": str(ans.path), "round": st.round + 1, **notes[ans.digest]}
        st.round += 1
        st.rng = rng.bit_generator.state
        st.worker_ids = workers
        st.batch = batch
        st.labels, st.post, st.learner_prob, st.learner_weights = data, post, learner_prob, weights
        st.task_counts, st.worker_counts, st.risk = sampler.task_counts, sampler.worker_counts, risk
        st.next, st.next_hit = nxt, nxt_hit
        st.history.append(self._progress(new_labels=int(t_new.size)))
        return True

    def _sampler(self, batch: int) -> RandomSampler:
        s, st = self.settings, self.state
        hits = batch // s.hit_size
        if hits < 1:
            raise UsageError(f"--batch {batch}: expected at least --hit-size {s.hit_size} tasks (one HIT)")
        if hits > s.workers:
            raise UsageError(f"--batch {batch} makes {hits} HITs of {s.hit_size}, more than the project's {s.workers} "
                             "worker slots (a worker takes one HIT a round); use a smaller --batch")
        sampler = RandomSampler(len(self.task_ids), s.workers, hit_size=s.hit_size, n_hits_per_step=hits,
                                risk_thres=s.risk_threshold, max_per_task=s.max_per_task,
                                max_per_worker=s.max_per_worker)
        sampler.task_counts, sampler.worker_counts = st.task_counts.copy(), st.worker_counts.copy()
        sampler.set_risk(st.risk)
        return sampler

    def _validate(self, exports: list[Answers]):
        """The new exports' usable labels (task, worker slot, class) int64 in file order, the worker ids after them,
        and per file what was used and skipped; every skip goes to ``state.report``."""
        st, s = self.state, self.settings
        tasks = pd.Index(self.task_ids)
        names = pd.Index(s.class_names) if s.class_names else None
        workers = list(st.worker_ids)
        slot = {w: i for i, w in enumerate(workers)}
        old_keys = st.labels[0] * s.workers + st.labels[1]
        out_t, out_w, out_z, notes = [], [], [], {}
        for ans in exports:
            df = ans.rows
            skipped = dict(ans.skipped)
            t = tasks.get_indexer(df["task"])
            z = _classes(df["label"], names, s.n_classes)
            ok = t >= 0
            _skip(skipped, "unknown tasks (not in the project's tasks)", ~ok, df["task"])
            bad = ok & (z < 0)
            expected = "a class name of --class-names or an index" if names is not None else "a class index"
            _skip(skipped, f"labels that are not {expected} 0..{s.n_classes - 1}", bad, df["label"])
            ok &= z >= 0
            w = np.full(len(df), -1, np.int64)
            for i in np.flatnonzero(ok):  # slots in order of first appearance; rows of a full project skipped
                wid = df["worker"].iat[i]
                if wid not in slot and len(workers) < s.workers:
                    slot[wid] = len(workers)
                    workers.append(wid)
                w[i] = slot.get(wid, -1)
            full = ok & (w < 0)
            _skip(skipped, f"labels from workers past the project's {s.workers} worker slots", full, df["worker"])
            ok &= w >= 0
            key = np.where(ok, t * s.workers + w, -1)
            earlier = np.concatenate([old_keys] + [ti * s.workers + wi for ti, wi in zip(out_t, out_w)])
            rep = ok & (pd.Series(key).duplicated().to_numpy() | np.isin(key, earlier))
            _skip(skipped, "repeated (task, worker) pairs (the first label kept)", rep,
                  df["task"] + " by " + df["worker"])
            ok &= ~rep
            out_t.append(t[ok].astype(np.int64))
            out_w.append(w[ok])
            out_z.append(z[ok])
            used = int(ok.sum())
            notes[ans.digest] = {"used": used, "skipped": {k: v for k, v in skipped.items()}}
            head = f"{ans.path} ({ans.fmt}): {used:,} labels used"
            st.report.append(head + "".join(f"; skipped {v['rows'] if isinstance(v, dict) else v:,} {k}"
                                            + (f" (e.g. {', '.join(v['examples'])})" if isinstance(v, dict) else "")
                                            for k, v in skipped.items()))
        cat = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in (out_t, out_w, out_z)]
        return cat[0], cat[1], cat[2], workers, notes

    def _progress(self, new_labels: int = 0) -> dict:
        st, s = self.state, self.settings
        N = len(self.task_ids)
        n = int(st.labels[0].size)
        return {"round": st.round, "labels": n, "new_labels": new_labels, "labels_per_image": n / N,
                "done_fraction": float((st.risk < s.risk_threshold).mean()),
                "estimated_accuracy": float(st.post.max(1).mean()), "next": int(st.next.size)}

    # -- saving --------------------------------------------------------------------------------------------------
    def save(self, write_outputs) -> Path:
        """The round's state and outputs (``write_outputs(project, folder)``) into ``round-NNNN``, then ``CURRENT``,
        then the links in ``DIR``; older round folders are removed once the new one is current."""
        st = self.state
        name = f"round-{st.round:04d}"
        final = self.root / name
        if st.round == 0:
            self._save_project()
        tmp = make_temp_dir(final)
        try:
            lab = dict(zip(("task", "worker", "label"), st.labels))
            np.savez(tmp / "arrays.npz", **lab, task_counts=st.task_counts, worker_counts=st.worker_counts,
                     risk=st.risk, next=st.next, next_hit=st.next_hit)
            np.save(tmp / "posteriors.npy", st.post)
            if st.learner_prob is not None:
                np.save(tmp / "learner_prob.npy", st.learner_prob)
            if st.learner_weights is not None:
                np.savez(tmp / LEARNER_FILE, **{f"{i}/{name}": v for i, w in enumerate(st.learner_weights)
                                                for name, v in w.items()})
            keep = ("round", "rng", "worker_ids", "ingested", "history", "batch")
            (tmp / "state.json").write_text(json.dumps({k: getattr(st, k) for k in keep}, indent=1))
            write_outputs(self, tmp)
            if final.exists():  # left by an attempt interrupted before CURRENT named it
                cur = self.root / CURRENT
                if cur.is_file() and cur.read_text().strip() == name:
                    raise DataError(f"--project {self.root}: {name} is already the current round; another process "
                                    "wrote it (run `status`)")
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_text(self.root / CURRENT, name + "\n")
        self.publish()
        for old in self.root.glob("round-*"):
            if old.name != name and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return final

    def publish(self) -> None:
        """Links ``DIR/<output>`` to the current round's copy, each replaced atomically (no copy of big files)."""
        cur = self.root / (self.root / CURRENT).read_text().strip()
        for out in OUTPUTS:
            with atomic_path(self.root / out) as tmp:
                tmp.unlink()
                try:
                    os.link(cur / out, tmp)
                except OSError:  # a filesystem without hard links
                    shutil.copyfile(cur / out, tmp)

    def _save_project(self) -> None:
        s = self.settings
        meta = {"version": VERSION, "settings": asdict(s), "sources": self.sources,
                "gold_idx": self.gold[0].tolist(), "gold_labels": self.gold[1].tolist()}
        with atomic_path(self.root / "tasks.csv") as tmp:
            pd.DataFrame({"task": self.task_ids}).to_csv(tmp, index=False)
        if self.features is not None:
            with atomic_path(self.root / "features.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, self.features)
        write_text(self.root / PROJECT_FILE, json.dumps(meta, indent=1))  # last: its presence marks a project


def _load_weights(path: Path) -> Optional[list[dict]]:
    """``learner.npz`` back into ``MLPLearner.weights()``'s list of {parameter: array}; None where absent."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        out: dict[int, dict] = {}
        for key in z.files:
            i, _, name = key.partition("/")
            out.setdefault(int(i), {})[name] = z[key]
    return [out[i] for i in sorted(out)]


def _hits(tasks: np.ndarray, workers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tasks, HIT number of each): the sampler hands a step's HITs one after another, each to another worker
    (HITs can be short once few tasks are eligible, so the worker changes, not a count, marks where one ends)."""
    hit = np.concatenate([[0], np.cumsum(workers[1:] != workers[:-1])]) if tasks.size else np.zeros(0, np.int64)
    return tasks, hit.astype(np.int64)


def _classes(values: pd.Series, names: Optional[pd.Index], k: int) -> np.ndarray:
    """Class index per text value (a class name, or an index 0..k-1), -1 where it is neither."""
    idx = np.full(len(values), -1, np.int64)
    if names is not None:
        idx = names.get_indexer(values).astype(np.int64)
    num = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    whole = np.isfinite(num) & (num == np.round(num)) & (num >= 0) & (num < k)
    return np.where((idx < 0) & whole, np.nan_to_num(num).astype(np.int64), idx)


def _skip(skipped: dict, reason: str, mask: np.ndarray, shown: pd.Series) -> None:
    if mask.any():
        ex = pd.unique(shown[mask])[:3].tolist()
        skipped[reason] = {"rows": int(mask.sum()), "examples": [repr(x) for x in ex]}


def _gold(gold: pd.DataFrame, task_ids: list[str], s: Settings) -> tuple[np.ndarray, np.ndarray]:
    """--gold (task,label): known-clean tasks validating the learner (the seed's prototypes)."""
    if list(gold.columns[:2]) != ["task", "label"]:
        raise DataError(f"--gold: expected columns task,label, got {','.join(map(str, gold.columns))}")
    t = pd.Index(task_ids).get_indexer(gold["task"])
    if (t < 0).any():
        raise DataError(f"--gold: tasks not in --tasks, e.g. {gold['task'][t < 0].tolist()[:3]}")
    names = pd.Index(s.class_names) if s.class_names else None
    z = _classes(gold["label"], names, s.n_classes)
    if (z < 0).any():
        raise DataError(f"--gold: labels that are not classes of the project, e.g. {gold['label'][z < 0].tolist()[:3]}")
    if len(np.unique(t)) != len(t):
        raise DataError("--gold: a task is listed twice; expected each once")
    return t.astype(np.int64), z
