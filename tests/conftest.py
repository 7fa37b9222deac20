"""Shared test setup: a `cuda` marker that skips without a GPU, Triton in interpreter mode on CPU,
fixed seeds per test, the path of the shared real crowd data, and the ops' backends as test parameters
(the `backend` fixture, `backends(...)`, `backend_mark(...)`, `backend_device(...)`)."""

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


# ------------------------------------------------------------------------------------------ op backends
# Where each backend's tests run: "triton" on the GPU when there is one (compiled), else on CPU tensors under
# TRITON_INTERPRET=1; "reference" and "cpu" on CPU tensors.
DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ("reference", "cpu", "triton")


def backend_device(backend: str) -> str:
    """The device of a test's tensors for ``backend``."""
    return DEVICE if backend == "triton" else "cpu"


def backend_mark(backend: str, device: str | None = None) -> pytest.MarkDecorator:
    """A skipif mark: skip, with the reason, where ``backend`` cannot run on ``device`` tensors here
    (default: ``backend_device(backend)``)."""
    from luab_fast._ext import HAS_EXT  # imported here: TRITON_INTERPRET is set above, before triton loads
    from luab_fast.kernels import triton_runs_on

    device = device or backend_device(backend)
    reason = {"cpu": None if HAS_EXT else "needs luab_fast._C (pip install -e . builds it)",
              "triton": None if triton_runs_on(device) else
              f"needs triton and {'a CUDA GPU' if device == 'cuda' else 'TRITON_INTERPRET=1'} for {device} tensors",
              }.get(backend)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def backends(*names: str, device: str | None = None) -> list:
    """``pytest.param`` of each backend of ``names`` (default: all three), id'd by name and skipped, with the
    reason, where it cannot run. ``device="cpu"``: for tests whose tensors stay on the CPU ("triton" then needs
    the interpreter)."""
    return [pytest.param(name, id=name, marks=backend_mark(name, device)) for name in names or BACKENDS]


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend that can run here (the others skip with the reason), on ``backend_device(backend)``. A test
    that wants fewer, or CPU tensors for "triton", parametrizes ``backend`` itself with ``backends(...)``."""
    return request.param


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
