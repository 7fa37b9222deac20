"""luab_fast imports without its compiled core, warns once with the fix, and fails only when a compiled
function is called, with an actionable message."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_C = textwrap.dedent("""
    import importlib.abc, sys, warnings
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "luab_fast._C":
                raise ImportError("simulated: build failed")
            return None
    sys.meta_path.insert(0, Block())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import luab_fast
        from luab_fast.aggregate import DawidSkene
    msgs = [str(w.message) for w in caught if "luab_fast._C" in str(w.message)]
    assert luab_fast.HAS_EXT is False
    assert len(msgs) == 1, msgs
    assert "pip install -e ." in msgs[0], msgs[0]
    try:
        DawidSkene().fit((__import__("numpy").array([0]), __import__("numpy").array([0]),
                          __import__("numpy").array([0])))
    except RuntimeError as e:
        assert "DawidSkene.fit" in str(e) and "pip install -e ." in str(e), e
        print("OK")
    else:
        raise AssertionError("calling a compiled function without _C must raise")
""")


def test_import_without_compiled_core_warns_once_and_raises_on_call():
    out = subprocess.run([sys.executable, "-c", BLOCK_C], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")


def test_compiled_core_is_loaded_here():
    import luab_fast
    from luab_fast import _ext

    assert luab_fast.HAS_EXT and _ext.require_ext("test") is _ext._C
    assert _ext._C.omp_max_threads() >= 1
