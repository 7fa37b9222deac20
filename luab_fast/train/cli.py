"""``main(argv)`` of ``python -m luab_fast.train`` under the name every package's command has (``<pkg>.cli``)."""

from .run import main

__all__ = ["main"]
