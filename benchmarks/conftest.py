"""Benchmark-suite setup: ``--bench-mode quick|full``, collection of ``bench_*.py``, the ``bench`` recorder
(one comparison per benchmark: ours beside the baseline) and the ``crowd`` data cache; at session end
the results document is assembled, printed as a markdown table and, with ``--bench-out DIR``, written.

``python -m benchmarks.run`` drives all of this; ``pytest benchmarks --bench-mode quick`` works too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

from benchmarks import _env
from benchmarks._crowd import CrowdSize
from benchmarks._record import Recorder, markdown_table, write_json_atomic

RECORDER = pytest.StashKey[Recorder]()
DOCUMENT = pytest.StashKey[dict]()  # the results document, for benchmarks.run to pick up
RUN_BY_RUNNER = pytest.StashKey[bool]()  # set by benchmarks.run, which prints the table itself
SCHEMA_VERSION = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("luab_fast benchmarks")
    group.addoption("--bench-mode", choices=("quick", "full"), default="quick",
                    help="quick: small sizes for CI (well under 2 minutes); full: the sizes of "
                         "../shared/docs/performance.md")
    group.addoption("--bench-out", default=None, metavar="DIR",
                    help="write <device>-<mode>-<timestamp>.json into DIR at session end")
    group.addoption("--bench-no-memory", action="store_true",
                    help="skip the peak-memory subprocesses (timing and correctness only)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORDER] = Recorder(config.getoption("--bench-mode"))
    # the baseline's own pandas-3 deprecation warnings (hundreds per run) are not ours to fix
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:crowdkit.*")
    config.addinivalue_line("filterwarnings", "ignore::FutureWarning:crowdkit.*")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collects ``bench_<op>.py`` (the project's naming) without touching the tests' ``python_files``."""
    # a file named on the command line is collected by pytest itself: collecting it here too ran it twice
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> Recorder:
    """The session's recorder: ``bench.side(...)``, ``bench.check(...)``, ``bench.answers``."""
    return pytestconfig.stash[RECORDER]


@pytest.fixture(scope="session")
def measure_memory(pytestconfig: pytest.Config) -> bool:
    return not pytestconfig.getoption("--bench-no-memory")


class Crowds:
    """Synthetic crowds by size, generated once per session and shared by both sides of a benchmark."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp = tmp_dir
        self._frames: dict[CrowdSize, tuple[Any, pd.DataFrame]] = {}

    def __call__(self, size: CrowdSize) -> tuple[Any, pd.DataFrame]:
        """``(SyntheticCrowd, DataFrame task/worker/label)``; the latest size only is kept in memory."""
        if size not in self._frames:
            from luab_fast.aggregate import make_crowd

            self._frames.clear()
            crowd = make_crowd(size.n_tasks, size.n_workers, size.labels_per_task, size.n_classes,
                               seed=size.seed)
            self._frames[size] = (crowd, crowd.frame())
        return self._frames[size]

    def npz(self, size: CrowdSize) -> Path:
        """The same crowd saved for a memory subprocess (which loads it instead of regenerating it)."""
        path = self._tmp / f"crowd-{size.n_tasks}-{size.n_workers}-{size.labels_per_task}-{size.n_classes}-" \
                           f"{size.seed}.npz"
        if not path.exists():
            crowd, _ = self(size)
            np.savez(path, task=crowd.task, worker=crowd.worker, label=crowd.label, truth=crowd.truth)
        return path


@pytest.fixture(scope="session")
def crowd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crowds]:
    tmp = tmp_path_factory.mktemp("crowds")
    yield Crowds(tmp)
    for path in tmp.glob("*.npz"):  # the 10M-label crowd is 240 MB; pytest keeps old temp dirs around
        path.unlink(missing_ok=True)


def build_document(config: pytest.Config, exitstatus: int) -> dict[str, Any]:
    env = _env.environment()
    return {"schema_version": SCHEMA_VERSION, "mode": config.getoption("--bench-mode"),
            "date": _env.now_utc().isoformat(), "device": env["device"], "env": env,
            "pytest_exit_status": int(exitstatus), "benchmarks": config.stash[RECORDER].comparisons()}


def results_path(out_dir: Path, doc: dict[str, Any]) -> Path:
    stamp = doc["date"].replace("-", "").replace(":", "").replace("+0000", "Z")
    return out_dir / f"{_env.device_slug(doc['device'])}-{doc['mode']}-{stamp}.json"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    doc = build_document(config, exitstatus)
    config.stash[DOCUMENT] = doc
    out = config.getoption("--bench-out")
    if out and doc["benchmarks"]:
        doc["path"] = str(write_json_atomic(doc, results_path(Path(out), doc)))


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    doc = config.stash.get(DOCUMENT, None)
    if doc is None or not doc["benchmarks"] or config.stash.get(RUN_BY_RUNNER, False):
        return
    terminalreporter.write_sep("=", "benchmark comparison")
    terminalreporter.write_line(markdown_table(doc))
    if doc.get("path"):
        terminalreporter.write_line(f"results: {doc['path']}")
