"""The one error of every packed store, and the one message for a store whose content contradicts itself."""

from __future__ import annotations

from .._cli import DataError


class StoreError(DataError):
    """A store that cannot be opened: missing, corrupt, of another kind or of an unsupported version (bad data:
    exit status 1 on the command line)."""


def damaged(path, detail: str) -> StoreError:
    """The one message for a store whose content contradicts itself (a shrunk array, an offset past its data,
    an index out of range): it was damaged after packing, or edited."""
    return StoreError(f"{path} is damaged ({detail}): re-pack it or run info --verify")
