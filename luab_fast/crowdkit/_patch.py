"""``patch_crowdkit()``: unchanged crowd-kit code runs on luab_fast's engines, the way scikit-learn-intelex's
``patch_sklearn()`` serves scikit-learn code.

    import luab_fast; luab_fast.patch_crowdkit()        # before crowd-kit's classes are imported
    from crowdkit.aggregation import DawidSkene         # luab_fast.crowdkit.DawidSkene

What is replaced, for every class luab_fast.crowdkit has at call time (``get_patch_names()``) or the subset named:
the attribute of that name in ``crowdkit.aggregation``, in ``crowdkit.aggregation.classification`` and in the module
that defines it (``crowdkit.aggregation.classification.dawid_skene``, ...). crowd-kit's own classes look some of
their module-mates up at call time (its OneCoinDawidSkene calls ``DawidSkene._m_step``), so a defining module's
attribute is replaced only while every class that module defines is patched; the public names always are.

The originals are kept in one table, once; patching twice changes nothing, ``unpatch_crowdkit()`` restores them
(all, or the names given). Names bound before the patch (``from crowdkit.aggregation import MajorityVote`` run
earlier, or crowd-kit's own defaults such as ``BinaryRelevance(base_aggregator=MajorityVote())``) keep crowd-kit's
classes, as with scikit-learn-intelex.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

#: the modules whose attribute of each name is replaced, besides the class's defining module
PUBLIC_MODULES = ("crowdkit.aggregation", "crowdkit.aggregation.classification")

_originals: dict[tuple[str, str], Any] = {}  # (module name, attribute) -> crowd-kit's object, recorded once
_patched: set[str] = set()


def _aggregation() -> ModuleType:
    try:
        return importlib.import_module("crowdkit.aggregation")
    except ImportError as exc:
        raise ImportError(f"patch_crowdkit needs crowd-kit, which could not be imported ({exc}); install it with "
                          "`pip install crowd-kit`, or use luab_fast.crowdkit's classes directly (they do not need "
                          "crowd-kit)") from exc


def get_patch_names() -> list[str]:
    """The classes patch_crowdkit() replaces: those of luab_fast.crowdkit that crowd-kit's aggregation has."""
    from .. import crowdkit as ours

    aggregation = _aggregation()
    return sorted(n for n in ours.__all__ if hasattr(aggregation, n) or any(k[1] == n for k in _originals))


def _resolve(names: str | Iterable[str] | None) -> list[str]:
    available = get_patch_names()
    if names is None:
        return available
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ValueError(f"cannot patch {unknown}: luab_fast.crowdkit replaces {available}")
    return wanted


def _original(module: str, name: str) -> Any:
    """crowd-kit's own object behind module.name (recorded the first time it is seen)."""
    key = (module, name)
    if key not in _originals:
        _originals[key] = getattr(importlib.import_module(module), name)
    return _originals[key]


def _defining_module(name: str) -> str:
    return _original(PUBLIC_MODULES[0], name).__module__


def _module_mates(module: str) -> list[str]:
    """The classes a crowd-kit module defines (its __all__)."""
    return list(getattr(importlib.import_module(module), "__all__", []))


def _apply() -> None:
    """Binds every target to ours or to crowd-kit's original, as _patched says (the one place that writes)."""
    from .. import crowdkit as ours

    for module, name in list(_originals):
        if module in PUBLIC_MODULES:
            use_ours = name in _patched
        else:  # a defining module: only when all its classes are ours (see the module docstring)
            use_ours = name in _patched and all(m in _patched for m in _module_mates(module))
        setattr(importlib.import_module(module), name, getattr(ours, name) if use_ours else _originals[(module, name)])


def patch_crowdkit(names: str | Iterable[str] | None = None) -> None:
    """Replaces crowd-kit's classes (all that luab_fast.crowdkit has, or ``names``) by luab_fast.crowdkit's.
    Idempotent. ImportError when crowd-kit is not installed; ValueError for a name luab_fast does not replace."""
    wanted = _resolve(names)
    for name in wanted:
        for module in (*PUBLIC_MODULES, _defining_module(name)):
            _original(module, name)
    _patched.update(wanted)
    _apply()


def unpatch_crowdkit(names: str | Iterable[str] | None = None) -> None:
    """Restores crowd-kit's own classes (all, or ``names``). Idempotent."""
    wanted = _resolve(names)
    _patched.difference_update(wanted)
    _apply()


def crowdkit_is_patched(name: str | None = None) -> bool:
    """Whether ``name`` (or any class, with None) is replaced now."""
    return bool(_patched) if name is None else name in _patched
