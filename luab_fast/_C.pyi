"""Type stub for the compiled core luab_fast._C (csrc/bindings.cpp and the bindings_*.cpp files). All arrays are
C-contiguous; ids are int64 in [0, n); results are float64 numpy arrays that own their memory.

Every function checks what it is given and raises ValueError naming the argument (dtype, shape, layout, ids out
of range, NaN/inf or negative where values must be finite and >= 0, sizes whose product would overflow); the
compiled code never aborts. n_threads: 0 means OpenMP's default, otherwise 1..MAX_THREADS (1024)."""

from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

MAX_THREADS: int  # 1024: the most threads any function accepts (csrc/common/parallel.hpp kMaxThreads)

def omp_max_threads() -> int: ...

class _Aggregate(ModuleType):
    def factorize_integers(self, values: I64, sorted: bool = False) -> tuple[I64, I64] | None:
        """(codes, uniques) of int64 ids, uniques in order of first appearance (ascending with sorted=True);
        None when the ids span too wide a range for a direct table."""
    def argmax_rows(self, x: npt.NDArray[np.floating[Any]], n_threads: int = 0) -> I64:
        """First index of each row's maximum of a float32/float64 [rows, k] array (numpy.argmax(x, axis=1))."""
    def majority_vote(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                      weights: F64 | None = None, n_threads: int = 0) -> F64:
        """Vote shares [T, K]; tasks without votes get the uniform distribution. weights [W] finite, >= 0."""
    def dawid_skene(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                    init_post: F64 | None = None, alpha: F64 | None = None, task_prior: F64 | None = None,
                    n_iter: int = 100, tol: float = 1e-5, one_coin: bool = False, single_precision: bool = False,
                    n_threads: int = 0) -> dict[str, Any]:
        """Keys: post [T, K], class_prior [K], theta [W, z, y] (None for one-coin), skills [W],
        loss_history list, n_iter int. init_post, task_prior [T, K] and alpha ([K, K], [W, K, K], or [2] for
        one-coin) hold finite values >= 0; post and theta are float32 with single_precision."""
    def bayes(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
              alpha: F64, task_prior: F64 | None = None, init_post: F64 | None = None, max_iter: int = 10,
              hard_criterion: bool = False, likelihood_epsilon: float = 1e-3, n_threads: int = 0) -> dict[str, Any]:
        """Keys: post [T, K], counts [W, z, y], theta [W, z, y], z_likelihood list, n_iter, converged,
        n_decreases."""

aggregate: _Aggregate

class _Byproducts(ModuleType):
    def parse_imagenet_xml(self, docs: list[bytes], n_threads: int = 0) -> dict[str, Any]:
        """ImageNet-AB XML documents → columns (csrc/byproducts/imagenet_xml.hpp): ok [n] bool, error [n] str,
        folder / filename [n] str, size [n, 3] int64, box_off [n+1], boxes [B, 4] float32, box_names [B],
        rec_off [n+1], rec_int [R, 11] int64, rec_str [R*4] str, click/trace/hover_off [R+1],
        click_xy / trace_xy [*, 2] float32, click_t / trace_t / hover_t int64, hover_enter [H] bool."""
    def tar_header_sum(self, buf: bytes, offset: int) -> int:
        """Unsigned checksum of the 512-byte tar header at buf[offset:] (checksum field as spaces)."""

byproducts: _Byproducts

class _Ops(ModuleType):
    def rasterize_traces(self, points: npt.NDArray[np.float32], times: I64, offsets: I64, rows: I64,
                         boxes: npt.NDArray[np.float32], flips: npt.NDArray[np.uint8], h: int, w: int, sigma: float,
                         dwell: bool, dwell_cap_ms: float, click_points: npt.NDArray[np.float32] | None = None,
                         click_offsets: I64 | None = None, click_mass: float = 1.0, normalize: int = 1,
                         n_threads: int = 0) -> npt.NDArray[np.float32]:
        """Trace heatmaps (csrc/ops/rasterize.hpp): points [P, 2], times [P], offsets [N + 1], rows [B] in [0, N),
        boxes [B, 4], flips [B] → [B, h, w] float32. sigma > 0 in output pixels, with 2 sigma² a finite nonzero
        float32 (about 1e-19 .. 1e19); a Gaussian wider than the map is cut to the map. normalize: 0 none,
        1 sum, 2 max. click_points [Q, 2] and click_offsets [N + 1] come together or not at all."""
    def label_pool(self, scores: npt.NDArray[np.float32], indices: npt.NDArray[np.integer[Any]],
                   boxes: npt.NDArray[np.float32], num_classes: int, out_h: int = 1, out_w: int = 1,
                   legacy: bool = False, softmax: bool = False, n_threads: int = 0) -> npt.NDArray[np.float32]:
        """Sparse LabelPooling (csrc/ops/label_pool.hpp): scores [B, K, S, S] float32, indices [B, K, S, S]
        int16/32/64 (native byte order) in [0, C) distinct along K, C = num_classes <= 2**31 - 1, boxes [B, 4]
        float32 (x0, y0, x1, y1) → [B, C, out_h, out_w] float32, bit-identical to torchvision's CPU roi_align
        (../shared/docs/label-pooling.md §7); softmax over C
        (ReLabel's targets) when softmax."""

ops: _Ops
