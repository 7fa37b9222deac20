"""crowd-kit's classification aggregators, to the letter of its API, on luab_fast's C++ engines.

>>> from luab_fast.crowdkit import DawidSkene       # instead of: from crowdkit.aggregation import DawidSkene
>>> import luab_fast; luab_fast.patch_crowdkit()     # or: unchanged crowd-kit code gets these engines

Same class names, constructor signatures and defaults, ``fit`` / ``fit_predict`` / ``fit_predict_proba``,
fitted attributes with crowd-kit's names, dtypes, index and column names (crowd-kit 1.4.2). crowd-kit itself
is not needed to use them.
"""

from .dawid_skene import DawidSkene, OneCoinDawidSkene
from .glad import GLAD
from .gold_majority_vote import GoldMajorityVote
from .kos import KOS
from .mace import MACE
from .majority_vote import MajorityVote
from .mmsr import MMSR
from .wawa import Wawa
from .zero_based_skill import ZeroBasedSkill

__all__: list[str] = ["DawidSkene", "GLAD", "GoldMajorityVote", "KOS", "MACE", "MajorityVote", "MMSR",
                      "OneCoinDawidSkene", "Wawa", "ZeroBasedSkill"]
