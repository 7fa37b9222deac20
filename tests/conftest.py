"""Shared test setup: a `cuda` marker that skips without a GPU, Triton in interpreter mode on CPU,
fixed seeds per test, and the path of the shared real crowd data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CROWD_DATASETS = ("bluebird", "rte", "dog", "web", "MS")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # torch missing or broken: no GPU tests
        return False


HAS_CUDA = _has_cuda()

# Without a GPU, Triton kernels run on CPU tensors under the interpreter (fp32, small shapes). The variable
# must be set before any @triton.jit runs: luab_fast imports its kernels lazily, after this file.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """Every test starts from the same seeds, so a failure reproduces."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def load_crowd(name: str):
    """Real crowd labels (task, worker, label) and gold truth (Series indexed by task) from ../shared."""
    import pandas as pd

    root = SHARED_DATA / "crowd" / name
    df = pd.read_csv(root / "label.csv").rename(columns={"item": "task"})
    truth = pd.read_csv(root / "truth.csv").set_index("item")["truth"]
    truth.index.name = "task"
    return df, truth
