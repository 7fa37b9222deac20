"""One error policy for every ``python -m luab_fast.*`` command.

A command fails with one line on stderr, ``error: <what>``, naming the argument or file, what was expected and
what came, and an exit status: 2 for a usage error (a bad argument, as argparse does), 1 for bad data (a file
that cannot be read or holds what it must not). No traceback unless ``LUAB_FAST_DEBUG=1``; an unexpected
exception still ends in one line that says how to get the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Optional, Sequence

EXIT_DATA = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad command-line argument or function argument (exit status 2)."""

    exit_status = EXIT_USAGE


class DataError(ValueError):
    """A file or its content cannot be used (exit status 1)."""

    exit_status = EXIT_DATA


def debug() -> bool:
    return os.environ.get("LUAB_FAST_DEBUG") == "1"


def _describe_os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device writing{where}; free some space and run again (nothing was replaced)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where or ' (a file)'}"
    if exc.errno == errno.ENOENT:
        return f"no such file or folder:{where}"
    if exc.errno == errno.EISDIR:
        return f"{where.strip() or 'a path'} is a folder, expected a file"
    if exc.errno == errno.ENOTDIR:
        return f"{where.strip() or 'a path'}: a part of the path is a file, not a folder"
    return f"{exc.strerror or exc}:{where}" if where else str(exc.strerror or exc)


def message_and_status(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for ``exc``."""
    status = getattr(exc, "exit_status", None)
    if isinstance(exc, MemoryError):
        return ("out of memory (the input is larger than this machine can hold, or a size/count argument is "
                "absurd)", EXIT_DATA)
    if isinstance(exc, OSError):
        return _describe_os_error(exc), EXIT_DATA
    if isinstance(exc, (UsageError, DataError)) or status is not None:
        return str(exc), int(status if status is not None else EXIT_DATA)
    if isinstance(exc, ValueError):
        return str(exc), EXIT_USAGE
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"unexpected {type(exc).__name__}{': ' + first[:300] if first else ''} — this is a bug in luab_fast; "
            f"rerun with LUAB_FAST_DEBUG=1 for the traceback and report it", EXIT_DATA)


def run(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Calls ``main(argv)`` and turns any exception into ``error: ...`` on stderr and an exit status."""
    try:
        return int(main(argv) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; say nothing, as other command-line tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        except (OSError, ValueError):
            pass
        return 1
    except BaseException as exc:  # noqa: BLE001 - the whole point: no traceback for users
        if debug():
            raise
        msg, status = message_and_status(exc)
        print(f"error: {msg}", file=sys.stderr)
        return status
