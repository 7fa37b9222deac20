"""Helpers for the hostile-input suite: run a command as a user would, and check that it failed with one
clear message, the right exit status, no traceback, and nothing lost or left behind."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from luab_fast import _cli

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    status: int
    out: str
    err: str

    def failed_with(self, status: int, *fragments: str) -> "Result":
        """Asserts exit ``status``, one ``error:`` line naming every fragment (case-insensitive), no traceback."""
        assert self.status == status, f"exit {self.status}, expected {status}\nstdout: {self.out}\nstderr: {self.err}"
        assert "Traceback" not in self.err, self.err
        assert "error:" in self.err, self.err
        low = self.err.lower()
        for frag in fragments:
            assert frag.lower() in low, f"{frag!r} not in the message:\n{self.err}"
        return self

    def ok(self) -> "Result":
        assert self.status == 0, f"exit {self.status}\nstdout: {self.out}\nstderr: {self.err}"
        return self


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli("aggregate", *args)`` runs ``python -m luab_fast.aggregate`` in this process, through the same
    error policy as ``__main__`` (``_cli.run``), and returns its ``Result``."""
    monkeypatch.delenv("LUAB_FAST_DEBUG", raising=False)

    def run(module: str, *args) -> Result:
        main = importlib.import_module(f"luab_fast.{module}.cli").main
        capsys.readouterr()
        try:
            status = _cli.run(main, [str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(status, out, err)

    return run


def run_process(module: str, *args, timeout: float = 120, env: dict | None = None, cwd=None) -> Result:
    """``python -m luab_fast.<module> args`` in a child process: for what may crash the interpreter."""
    e = {**os.environ, **(env or {})}
    e.pop("LUAB_FAST_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", f"luab_fast.{module}", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=e, cwd=cwd or REPO)
    return Result(p.returncode, p.stdout, p.stderr)


def run_python(code: str, timeout: float = 120) -> Result:
    """A snippet in a child process (a segfault or abort there fails the test, not the suite)."""
    e = dict(os.environ)
    e.pop("LUAB_FAST_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=e,
                       cwd=REPO)
    return Result(p.returncode, p.stdout, p.stderr)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with its sha256: compare before and after a failed command."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporaries left under ``root`` (names with ``.tmp`` in them)."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if ".tmp" in p.name)
