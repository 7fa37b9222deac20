"""Scoring models on the standard ImageNet test sets (``python -m luab_fast.evaluate``; docs/evaluation.md).

Each kind of split (``kinds.REGISTRY``) reads its public layout and scores the model's predictions its way;
``runner`` runs a model over a split with the library's loader; the trainer's ``--val-data NAME=KIND:PATH``
goes through the same kinds and runner.
"""

from .kinds import REGISTRY, Kind, Options, Split, register

__all__ = ["REGISTRY", "Kind", "Options", "Split", "register"]
