"""Every crowd-kit classification model, ours (luab_fast.crowdkit) beside crowd-kit 1.4.2's, on the real crowds of
../shared/data/crowd: accuracy against their gold labels, label agreement and time, in one process.

    python -m benchmarks.crowdkit_accuracy [--out benchmarks/results] [--crowds bluebird rte ...] [--skip-slow]

Prints one markdown table and writes ``<out>/crowdkit-accuracy-<timestamp>.json``. crowd-kit's Wawa, ZeroBasedSkill
and GoldMajorityVote run with its scikit-learn fitted check shimmed (``_crowd.crowdkit_fitted_check_shim``: under
scikit-learn >= 1.6 they fail there, before computing anything). GoldMajorityVote is given the gold labels of every
other task and scored on the rest; KOS runs on the two-class crowds only. ``--skip-slow`` leaves out crowd-kit's
GLAD on web (~30 s here) and its MACE (10-20 s per crowd).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks._crowd import crowdkit_fitted_check_shim

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"
CROWDS = ("bluebird", "rte", "dog", "web", "MS")
MODELS = ("MajorityVote", "Wawa", "ZeroBasedSkill", "GoldMajorityVote", "DawidSkene", "OneCoinDawidSkene", "GLAD",
          "MACE", "KOS", "MMSR")
SLOW = {("GLAD", "web"), *(("MACE", c) for c in CROWDS)}


def load(name: str) -> tuple[pd.DataFrame, pd.Series]:
    root = SHARED / name
    df = pd.read_csv(root / "label.csv").rename(columns={"item": "task"})
    truth = pd.read_csv(root / "truth.csv").set_index("item")["truth"].rename_axis("task")
    return df, truth


def run(cls: Any, model: str, df: pd.DataFrame, gold: pd.Series) -> tuple[pd.Series, float]:
    est = cls()
    t0 = time.perf_counter()
    labels = est.fit_predict(df, gold) if model == "GoldMajorityVote" else est.fit_predict(df)
    return labels, time.perf_counter() - t0


def refuses(cls: Any, model: str, df: pd.DataFrame, gold: pd.Series) -> str | None:
    """crowd-kit's error for the same input, or None when it does not raise."""
    try:
        run(cls, model, df, gold)
    except ValueError as exc:
        return str(exc)
    return None


def accuracy(labels: pd.Series, truth: pd.Series) -> float:
    common = truth.index.intersection(labels.index)
    return float((labels.loc[common].to_numpy() == truth.loc[common].to_numpy()).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crowdkit_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--crowds", nargs="+", default=list(CROWDS), choices=CROWDS)
    p.add_argument("--skip-slow", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="crowdkit")  # pandas 3 deprecations inside crowd-kit 1.4.2
    from crowdkit import aggregation as theirs_lib

    from luab_fast import crowdkit as ours_lib

    crowdkit_fitted_check_shim()
    rows: list[dict[str, Any]] = []
    for crowd in args.crowds:
        df, truth = load(crowd)
        gold = truth.iloc[::2]  # GoldMajorityVote's gold; it is scored on the other half
        scored = truth.drop(gold.index)
        for model in MODELS:
            if model == "KOS" and df["label"].nunique() != 2:
                continue
            try:
                ours, t_ours = run(getattr(ours_lib, model), model, df, gold)
            except ValueError as exc:  # GoldMajorityVote with a worker lacking gold answers: crowd-kit raises too
                refused = refuses(getattr(theirs_lib, model), model, df, gold)
                rows.append({"crowd": crowd, "model": model, "labels": len(df), "refused": str(exc),
                             "crowdkit_refused": refused})
                print(f"{crowd:<9} {model:<18} refused by ours ({exc}); crowd-kit: {refused or 'did not refuse'}")
                continue
            row = {"crowd": crowd, "model": model, "labels": len(df),
                   "ours_accuracy": accuracy(ours, scored if model == "GoldMajorityVote" else truth), "ours_s": t_ours}
            if not (args.skip_slow and (model, crowd) in SLOW):
                base, t_base = run(getattr(theirs_lib, model), model, df, gold)
                row.update(crowdkit_accuracy=accuracy(base, scored if model == "GoldMajorityVote" else truth),
                           crowdkit_s=t_base, same_labels=float((ours == base.reindex(ours.index)).mean()),
                           speedup=t_base / t_ours)
            rows.append(row)
            print(f"{crowd:<9} {model:<18} ours {row['ours_accuracy']:.4f} ({t_ours * 1e3:8.1f} ms)   crowd-kit "
                  + (f"{row['crowdkit_accuracy']:.4f} ({row['crowdkit_s'] * 1e3:8.1f} ms)   same labels "
                     f"{row['same_labels']:.2%}   {row['speedup']:.0f}×" if "crowdkit_s" in row else "not run"),
                  flush=True)
    table = pd.DataFrame(rows)
    print("\n" + markdown(table))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"crowdkit-accuracy-{stamp}.json"
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps({"date": stamp, "rows": rows}, indent=1))
    tmp.rename(path)
    print(f"\nresults: {path}")
    return 0


def markdown(table: pd.DataFrame) -> str:
    """Accuracy per model (rows) and crowd (columns): 'ours / crowd-kit' where both ran."""
    lines = ["| model | " + " | ".join(table["crowd"].unique()) + " |",
             "|---|" + "---|" * table["crowd"].nunique()]
    for model, group in table.groupby("model", sort=False):
        cells = []
        for crowd in table["crowd"].unique():
            r = group[group["crowd"] == crowd]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            if pd.notna(r.get("refused")):
                cells.append("refused" + (" (both)" if pd.notna(r.get("crowdkit_refused")) else ""))
                continue
            theirs = f" / {r['crowdkit_accuracy']:.3f}" if pd.notna(r.get("crowdkit_accuracy")) else ""
            cells.append(f"{r['ours_accuracy']:.3f}{theirs}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
