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
    def factorize_integer_columns(self, columns: list[I64], sorted: list[bool], n_threads: int = 0
                                  ) -> list[tuple[I64, I64] | None]:
        """factorize_integers of several columns in one call, a column a thread."""
    def argmax_rows(self, x: npt.NDArray[np.floating[Any]], n_threads: int = 0) -> I64:
        """First index of each row's maximum of a float32/float64 [rows, k] array (numpy.argmax(x, axis=1))."""
    def majority_vote(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                      weights: F64 | None = None, n_threads: int = 0) -> F64:
        """Vote shares [T, K]; tasks without votes get the uniform distribution. weights [W] finite, >= 0."""
    def dawid_skene(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                    init_post: F64 | None = None, alpha: F64 | None = None, task_prior: F64 | None = None,
                    n_iter: int = 100, tol: float = 1e-5, one_coin: bool = False, single_precision: bool = False,
                    n_threads: int = 0, init_theta: F64 | None = None, gold: I64 | None = None) -> dict[str, Any]:
        """Keys: post [T, K], class_prior [K], theta [W, z, y] (None for one-coin), skills [W],
        loss_history list, n_iter int. init_post, task_prior [T, K] and alpha ([K, K], [W, K, K], or [2] for
        one-coin) hold finite values >= 0; post and theta are float32 with single_precision. init_theta [W, z, y]:
        the first E-step's worker tables instead of a start from init_post (crowd-kit's initial_error);
        gold [T]: a class per task (-1 for none) whose posterior every E-step fixes (crowd-kit's true_labels)."""
    def bayes(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
              alpha: F64, task_prior: F64 | None = None, init_post: F64 | None = None, max_iter: int = 10,
              hard_criterion: bool = False, likelihood_epsilon: float = 1e-3, n_threads: int = 0) -> dict[str, Any]:
        """Keys: post [T, K], counts [W, z, y], theta [W, z, y], z_likelihood list, n_iter, converged,
        n_decreases."""
    def confusion_counts(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                         post: F64, n_threads: int = 0) -> F64:
        """Expected counts [W, z, y] = sum over worker w's labels z of post[task, y]."""
    def crowdkit_vote(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                      weights: F64 | None = None, order: I64 | None = None, shares: bool = True,
                      n_threads: int = 0) -> tuple[Any, I64, int]:
        """crowd-kit 1.4.2's (weighted) majority vote to the bit: (shares [T, K] or None, labels [T] (-1 where
        every share is NaN), the number of such tasks). order: the classes in crowd-kit's column order, for
        ties."""
    def glad(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int, label_prior: F64,
             alpha_mean: F64, beta_mean: F64, alpha_init: F64 | None = None, beta_init: F64 | None = None,
             n_iter: int = 100, tol: float = 1e-5, m_step_max_iter: int = 25, m_step_tol: float = 0.01,
             progress: Any = None, n_threads: int = 0) -> dict[str, Any]:
        """GLAD's EM in crowd-kit 1.4.2's order; labels in [0, n_classes], n_classes meaning a label outside the
        model's classes. progress(iteration, q), if given, is called at the start of each EM iteration."""
    def kos(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, init_reliability: F64,
            n_iter: int = 100, max_abs: float = 1e300, tasks_in_runs: bool = False, workers_in_runs: bool = False,
            n_threads: int = 0) -> dict[str, Any]:
        """KOS message passing on a binary crowd (label 0 votes +1, label 1 votes -1) from one starting
        reliability per label (input order). tasks_in_runs / workers_in_runs: the rows come sorted by task /
        worker, so pandas sums those groups pairwise rather than by Kahan. Keys: task_score [T] (the sign gives
        the label), n_iter (whole iterations run), overflowed (stopped by |sum| > max_abs)."""
    def mace(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int, spamming0: F64,
             thetas0: F64, theta_row: F64, theta_col: F64, n_iter: int = 50, variational: bool = True,
             smoothing: float = 0.0, alpha: float = 0.5, beta: float = 0.5, strategy_prior: float = 10.0,
             n_threads: int = 0) -> dict[str, Any]:
        """MACE as crowd-kit 1.4.2 fits it, from the given starts (spamming0 [R, W, 2], thetas0 [R, W, K]).
        Keys: spamming [W, 2], thetas [W, K] of the best start, probas [T, K] under them, log_likelihood (one
        per start), best (its index)."""
    def mmsr(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int, u0: F64, v0: F64,
             n_iter: int = 10000, tol: float = 1e-10, n_threads: int = 0) -> dict[str, Any]:
        """M-MSR's rank-one fit of the workers' covariation matrix from u0, v0 [W]. Keys: u, v [W],
        loss_history; the sparse covariation matrix (pair_ptr [W+1], partner, common, cov: the observed pairs,
        partners ascending; unobserved_cov: every other entry and the diagonal), min_partners, row_sums [W]
        (numpy's sum(axis=1))."""
    def skill_weighted_vote(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                            reference: I64 | None = None, order: I64 | None = None,
                            n_threads: int = 0) -> tuple[F64, F64, Any, int]:
        """crowd-kit 1.4.2's Wawa (reference None: the plain vote, ties in `order`) or GoldMajorityVote
        (reference: the gold class per task, -1 for none) fit_predict: (hits [W], counted [W], the
        skill-weighted vote's labels [T] or None when a worker has no skill, the number of tasks it labels
        -1)."""
    def weighted_vote_shares(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                             skills: F64, in_runs: bool = False, n_threads: int = 0) -> F64:
        """crowd-kit's MajorityVote(skills=...).probas_ as [T, K]: per task the skills behind each label, summed
        as pandas sums them (in_runs: the rows come sorted by (task, label)), divided by the row total (negative
        skills allowed)."""
    def worker_accuracy(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                        reference: Any, n_threads: int = 0) -> tuple[F64, F64]:
        """crowd-kit 1.4.2's get_accuracy per worker: (hits [W], counted [W]) over each worker's distinct (task,
        label) answers on tasks with reference >= 0."""
    def zero_based_skill(self, task: I64, worker: I64, label: I64, n_tasks: int, n_workers: int, n_classes: int,
                         skills: F64, n_iter: int = 100, lr_init: float = 1.0, lr_steps_to_reduce: int = 20,
                         lr_reduce_factor: float = 0.5, predict: bool = False,
                         n_threads: int = 0) -> tuple[F64, Any, int]:
        """crowd-kit 1.4.2's Zero-Based Skill: (the workers' skills [W] after n_iter steps from the given start;
        with predict, the labels [T] of the vote they weight (-1: every share NaN) and the number of such tasks,
        else None and 0)."""

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

class _Io(ModuleType):
    def csv_rows(self, ids: list[str], values: npt.NDArray[np.float32], n_threads: int = 0) -> bytes:
        """The CSV lines '<id>,<v0>,...\\n' of ids [n] and values float32 [n, k] (csrc/io/csv_rows.hpp): each value
        the shortest decimal that reads back as the same float32; an id holding a comma, quote or line break
        quoted as pandas quotes it."""

io: _Io
