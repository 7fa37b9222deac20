"""The one error and write policy every entry point shares (luab_fast._cli, luab_fast._atomic): exit statuses,
no traceback unless LUAB_FAST_DEBUG=1, atomic writes with the umask's mode, and no temporary left behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from luab_fast import _atomic, _cli

from .conftest import REPO, leftovers, run_process, snapshot

MODULES = ("aggregate", "annotate", "byproducts", "relabel", "train")


@pytest.mark.parametrize("module", MODULES)
def test_every_command_fails_with_one_line_and_no_traceback(module, tmp_path):
    """A path that does not exist, given where each command takes its main input."""
    missing = tmp_path / "no_such_input"
    args = {"aggregate": [missing], "annotate": ["--features", missing, "--truth", missing],
            "byproducts": ["info", missing], "relabel": ["info", missing], "train": ["--data", missing]}[module]
    r = run_process(module, *args, timeout=120)
    assert r.status in (1, 2), (r.status, r.err)
    assert "Traceback" not in r.err and r.err.count("error:") == 1, r.err
    assert str(missing) in r.err or "no_such_input" in r.err, r.err


@pytest.mark.parametrize("module", MODULES)
def test_main_module_goes_through_the_policy(module):
    """``python -m luab_fast.<module>`` must call ``_cli.run``: an unexpected exception inside ``main`` is one
    line that asks for LUAB_FAST_DEBUG=1, and with it set the traceback is shown."""
    # an unknown option in argv: should the patch not take, the real command stops at once (argparse), never
    # runs its default job
    code = (f"import sys, luab_fast.{module}.cli as c\n"
            f"sys.argv = ['x', '--no-such-option-anywhere']\n"
            f"def boom(argv=None):\n    raise RuntimeError('injected failure')\n"
            f"c.main = boom\n"
            f"import luab_fast.{module}.__main__\n")
    env = {k: v for k, v in os.environ.items() if k != "LUAB_FAST_DEBUG"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert "injected failure" in quiet.stderr, f"luab_fast.{module}.__main__ must run cli.main: {quiet.stderr}"
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr, quiet.stderr
    assert "LUAB_FAST_DEBUG=1" in quiet.stderr and "RuntimeError" in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "LUAB_FAST_DEBUG": "1"}, cwd=REPO)
    assert loud.returncode != 0 and "Traceback" in loud.stderr, loud.stderr


@pytest.mark.parametrize("exc, status, fragment", [
    (_cli.UsageError("--x: expected 1, got 2"), 2, "--x"),
    (_cli.DataError("f.csv: row 3 is empty"), 1, "row 3"),
    (ValueError("--y must be positive"), 2, "--y"),
    (OSError(errno.ENOSPC, "No space left on device", "out.csv"), 1, "no space left"),
    (OSError(errno.EACCES, "Permission denied", "out.csv"), 1, "permission denied"),
    (MemoryError(), 1, "out of memory"),
    (KeyError("surprise"), 1, "bug in luab_fast"),
])
def test_exit_status_and_message(exc, status, fragment, capsys, monkeypatch):
    monkeypatch.delenv("LUAB_FAST_DEBUG", raising=False)

    def main(argv=None):
        raise exc

    assert _cli.run(main, []) == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment.lower() in err.lower() and "Traceback" not in err, err


def test_broken_pipe_is_quiet(capsys):
    def main(argv=None):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    saved = os.dup(1)
    try:
        assert _cli.run(main, []) == 1
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert "error" not in capsys.readouterr().err


def test_atomic_write_has_the_umask_mode_and_keeps_a_users_tmp(tmp_path):
    (tmp_path / "out.csv.tmp").write_text("the user's own file")
    old = os.umask(0o027)
    try:
        _atomic.write_text(tmp_path / "out.csv", "a,b\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out.csv.tmp").read_text() == "the user's own file"
    assert leftovers(tmp_path) == ["out.csv.tmp"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    (tmp_path / "out.csv").write_text("old")
    before = snapshot(tmp_path)
    with pytest.raises(OSError) as info:
        with _atomic.atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert info.value.filename == str(tmp_path / "out.csv")  # the user's file named, not our temporary
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_a_killed_writers_temporary_is_swept_by_the_next_write(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)  # this pid has exited
    stale = tmp_path / f".last.pt.{dead}.abc123.tmp.pt"
    stale.write_bytes(b"torn")
    live = tmp_path / f".last.pt.{os.getpid()}.def456.tmp.pt"  # a writer that still runs (this one)
    live.write_bytes(b"in flight")
    _atomic.write_text(tmp_path / "last.pt", "new")
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("bad, fragment", [("", "expected a file name"), ("missing/x.csv", "does not exist"),
                                           (".", "expected a file name"), ("adir", "is a folder")])
def test_check_destination_names_the_argument(tmp_path, bad, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    with pytest.raises(ValueError, match="--out") as info:
        _atomic.check_destination(bad, "--out")
    assert fragment in str(info.value)
