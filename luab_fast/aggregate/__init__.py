"""EM label aggregation on the C++ engine, with crowd-kit's interface.

>>> from luab_fast.aggregate import DawidSkene
>>> labels = DawidSkene().fit_predict(df)          # df: columns task, worker, label
"""

from .bayes import BayesAggregator, homogeneous_prior, predefined_prior
from .dawid_skene import DawidSkene, OneCoinDawidSkene
from .majority_vote import MajorityVote
from .synthetic import SyntheticCrowd, make_crowd

METHODS = {"mv": MajorityVote, "ds": DawidSkene, "onecoin": OneCoinDawidSkene, "bayes": BayesAggregator}

__all__ = ["BayesAggregator", "DawidSkene", "MajorityVote", "METHODS", "OneCoinDawidSkene", "SyntheticCrowd",
           "homogeneous_prior", "make_crowd", "predefined_prior"]
