"""The compiled bindings accept numpy arrays that come back from pickle (multiprocessing, joblib, caches): such an
array carries a dtype object of its own, equal to but not the same object as numpy's int64 / float32, which a
check by identity refused ("task must be a int64 array, got dtype int64"). Each call must give the same result
as with the original arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

_C = pytest.importorskip("luab_fast._C")
AGG, OPS = _C.aggregate, _C.ops


def unpickled(a: np.ndarray) -> np.ndarray:
    return pickle.loads(pickle.dumps(a))


T = np.array([0, 0, 1, 2, 2, 1], np.int64)
W = np.array([0, 1, 1, 0, 2, 2], np.int64)
L = np.array([0, 1, 1, 0, 1, 1], np.int64)


def _glad(p):
    return AGG.glad(p(T), p(W), p(L), 3, 3, 2, p(np.full(2, 0.5)), p(np.ones(3)), p(np.ones(3)), n_iter=3)


def _mace(p):
    return AGG.mace(p(T), p(W), p(L), 3, 3, 2, p(np.full((2, 3, 2), 0.5)), p(np.full((2, 3, 2), 0.5)),
                    p(np.arange(3, dtype=np.int64)), p(np.arange(2, dtype=np.int64)), n_iter=3)


def _kos(p):
    return AGG.kos(p(T), p(W), p(L), 3, 3, p(np.linspace(0.5, 1.5, 6)), n_iter=3)


def _mmsr(p):
    return AGG.mmsr(p(T), p(W), p(L), 3, 3, 2, p(np.ones(3)), p(np.ones(3)), n_iter=3)


def _dawid_skene(p):
    return AGG.dawid_skene(p(T), p(W), p(L), 3, 3, 2, init_post=p(np.full((3, 2), 0.5)), n_iter=3)


def _label_pool(p):
    scores = np.linspace(0.1, 1.0, 18, dtype=np.float32).reshape(1, 2, 3, 3)
    indices = np.stack([np.zeros((3, 3), np.int64), np.ones((3, 3), np.int64)])[None]
    boxes = np.array([[0.1, 0.1, 0.9, 0.9]], np.float32)
    return OPS.label_pool(p(scores), p(indices), p(boxes), 4, 2, 2)


def _rasterize(p):
    return OPS.rasterize_traces(p(np.array([[0.2, 0.3], [0.5, 0.5], [0.7, 0.4]], np.float32)),
                                p(np.arange(3, dtype=np.int64)), p(np.array([0, 3], np.int64)),
                                p(np.array([0], np.int64)), p(np.array([[0, 0, 1, 1]], np.float32)),
                                p(np.zeros(1, np.uint8)), 4, 5, 1.0, False, 1000.0)


CALLS = {"glad": _glad, "mace": _mace, "kos": _kos, "mmsr": _mmsr, "dawid_skene": _dawid_skene,
         "label_pool": _label_pool, "rasterize_traces": _rasterize}


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("binding", CALLS)
def test_binding_accepts_unpickled_arrays(binding):
    call = CALLS[binding]
    _same(call(unpickled), call(lambda a: a))


def test_byte_swapped_arrays_are_still_refused():
    """Equivalent dtypes, not any dtype of the same kind: a big-endian array would be read as other numbers."""
    with pytest.raises(ValueError, match="task must be a int64 array, got dtype >i8"):
        AGG.kos(T.astype(">i8"), W, L, 3, 3, np.ones(6))
    with pytest.raises(ValueError, match="points must be float32, got dtype >f4"):
        _rasterize(lambda a: a.astype(">f4") if a.dtype == np.float32 and a.shape == (3, 2) else a)
