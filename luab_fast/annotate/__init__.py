"""``python -m luab_fast.annotate``: the online labelling loop of the efficient-annotation paper (Liao, Kar,
Fidler, CVPR 2021) on the C++ EM engine: simulated workers from real AMT confusions, samplers, the MLP
learner, the loop and its four methods."""

from .learner import LearnerConfig, MLPLearner
from .loop import METHODS, run_method
from .samplers import GreedySampler, RandomSampler
from .workers import ReplayWorkers, SimulatedWorkers, load_amt, pooled_counts, structured_workers, uniform_workers

__all__ = ["GreedySampler", "LearnerConfig", "METHODS", "MLPLearner", "RandomSampler", "ReplayWorkers",
           "SimulatedWorkers", "load_amt", "pooled_counts", "run_method", "structured_workers", "uniform_workers"]
