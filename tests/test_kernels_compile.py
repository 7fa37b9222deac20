"""Every Triton kernel compiles to a cubin for an H100 (sm_90), with no GPU needed.

The interpreter runs the kernels' arithmetic on the CPU but skips the compiler (types of loop-carried
values, constexpr specialisation, layouts): this catches what would only fail on the first GPU run.
Each script runs in a subprocess because TRITON_INTERPRET=1 (set by conftest) replaces @triton.jit in this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

# label_pool, relabel_cross_entropy, rasterize_traces
SCRIPT = r'''
import re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from luab_fast.kernels.label_pool import _label_pool_kernel
from luab_fast.kernels.relabel_cross_entropy import _relabel_ce_kernel
import triton.language as tl

target = GPUTarget("cuda", 90, 32)
POOL = {"scores_ptr": "*fp16", "indices_ptr": "*i16", "rows_ptr": "*i64", "boxes_ptr": "*fp32",
        "out_ptr": "*fp32", "acc_ptr": "*i64", "N": "i32", "C": "i32", "K": "i32", "S": "i32",
        "out_h": "i32", "out_w": "i32"}
for has_rows, legacy, softmax, sdt, idt in [(True, True, True, "*fp16", "*i16"), (False, False, False, "*fp32", "*i64"),
                                           (True, False, True, "*bf16", "*fp32")]:
    sig = dict(POOL, scores_ptr=sdt, indices_ptr=idt,
               **{k: "constexpr" for k in ("HAS_ROWS", "LEGACY", "SOFTMAX", "CELLS", "BLOCK_C")})
    consts = dict(HAS_ROWS=has_rows, LEGACY=legacy, SOFTMAX=softmax, CELLS=256, BLOCK_C=1024)
    k = triton.compile(ASTSource(_label_pool_kernel, sig, consts), target=target, options={"enable_fp_fusion": False})
    ptx = k.asm["ptx"]
    assert "bar.sync" in ptx and re.search(r"atom\.global\.[\w.]*add\.u64", ptx), "barrier / int64 atomics missing"
    assert len(k.asm["cubin"]) > 0
CE = {"logits_ptr": "*bf16", "scores_ptr": "*fp16", "indices_ptr": "*i16", "rows_ptr": "*i64", "boxes_ptr": "*fp32",
      "loss_ptr": "*fp32", "grad_ptr": "*bf16", "acc_ptr": "*i64", "N": "i32", "C": "i32", "K": "i32", "S": "i32"}
for logits, loss, grad, dtype in [("*bf16", "*fp32", True, tl.float32), ("*fp64", "*fp64", True, tl.float64),
                                  ("*fp32", "*fp32", False, tl.float32)]:
    sig = dict(CE, logits_ptr=logits, loss_ptr=loss, grad_ptr=logits,
               **{k: "constexpr" for k in ("HAS_ROWS", "LEGACY", "COMPUTE_GRAD", "DTYPE", "CELLS", "BLOCK_C")})
    consts = dict(HAS_ROWS=True, LEGACY=False, COMPUTE_GRAD=grad, DTYPE=dtype, CELLS=256, BLOCK_C=1024)
    k = triton.compile(ASTSource(_relabel_ce_kernel, sig, consts), target=target, options={"enable_fp_fusion": False})
    assert len(k.asm["cubin"]) > 0
from luab_fast.kernels.rasterize import _rasterize_kernel
RAST = {"xy_ptr": "*fp32", "t_ptr": "*i64", "off_ptr": "*i64", "cxy_ptr": "*fp32", "coff_ptr": "*i64",
        "rows_ptr": "*i64", "boxes_ptr": "*fp32", "flips_ptr": "*u8", "out_ptr": "*fp32", "N": "i32", "P": "i32",
        "Q": "i32", "H": "i32", "W": "i32", "two_s2": "fp32", "inv_two_s2": "fp32", "click_mass": "fp32",
        "dwell_cap_ms": "fp32"}
for dwell, clicks, norm, tile in [(True, True, 1, 64), (False, False, 0, 16), (True, False, 2, 32)]:
    sig = dict(RAST, **{k: "constexpr" for k in ("DWELL", "HAS_CLICKS", "NORMALIZE", "TILE_H", "TILE_W", "BLOCK_P")})
    consts = dict(DWELL=dwell, HAS_CLICKS=clicks, NORMALIZE=norm, TILE_H=tile, TILE_W=tile, BLOCK_P=32)
    k = triton.compile(ASTSource(_rasterize_kernel, sig, consts), target=target)
    assert len(k.asm["cubin"]) > 0
    # IEEE float32 products (not TF32): the maps must match the reference to 1e-5
    assert "tf32" not in k.asm["ptx"], "rasterize's tl.dot must not use TF32"
print("compiled")
'''


# luab_loss: its variants, no register spills
LUAB_LOSS = r'''
import re
import subprocess
import tempfile
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource
from luab_fast.kernels.luab_loss import _luab_loss_kernel, launch_config

PTRS = ("x_ptr", "t_ptr", "cls_ptr", "gx_ptr", "pp_ptr", "pt_ptr", "pl_ptr", "gp_ptr", "hp_ptr", "ht_ptr",
        "hl_ptr", "hm_ptr", "gh_ptr")
FLAGS = ("HARD", "HAS_POINT", "HAS_HEAT", "COMPUTE_GRAD", "DTYPE", "BLOCK_C", "BLOCK_HW")
# (predictions, losses, hard targets, point, heat, grad, DTYPE, C, h·w): the training variants, the largest
# heat map (fp32 and fp64) and a bare one
for pred, wide, hard, point, heat, grad, dtype, C, HW in [
        ("*bf16", "*fp32", True, True, True, True, tl.float32, 21843, 196),
        ("*fp32", "*fp32", False, True, True, True, tl.float32, 1000, 49),
        ("*fp32", "*fp32", True, True, True, True, tl.float32, 1000, 4096),
        ("*fp64", "*fp64", True, True, True, True, tl.float64, 37, 4096),
        ("*fp32", "*fp32", True, False, False, False, tl.float32, 1000, 1)]:
    sig = {p: wide for p in PTRS}
    sig.update(x_ptr=pred, gx_ptr=pred, pp_ptr=pred, gp_ptr=pred, hp_ptr=pred, gh_ptr=pred, pt_ptr="*fp32",
               ht_ptr="*fp32", t_ptr="*i64" if hard else "*fp32", C="i32", HW="i32", eps="fp32",
               **{f: "constexpr" for f in FLAGS})
    cfg = launch_config(C, HW)
    consts = dict(HARD=hard, HAS_POINT=point, HAS_HEAT=heat, COMPUTE_GRAD=grad, DTYPE=dtype,
                  BLOCK_C=cfg["BLOCK_C"], BLOCK_HW=cfg["BLOCK_HW"])
    k = triton.compile(ASTSource(_luab_loss_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": cfg["num_warps"]})
    assert len(k.asm["cubin"]) > 0
    # a whole heat map and a 4096-class block live in registers: spilling would cost the bandwidth
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(k.asm["ptx"])
        f.flush()
        info = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name=sm_90a", f.name, "-o", "/dev/null"],
                              capture_output=True, text=True, check=True).stderr
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", info)]
    assert spills and max(spills) == 0, (pred, C, HW, info)
print("compiled")
'''


def compile_in_subprocess(script: str) -> None:
    """Runs ``script`` (it prints "compiled") with TRITON_INTERPRET unset; skips where ptxas is missing."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("triton's ptxas is not available here")
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-4000:]


@pytest.mark.slow
def test_triton_kernels_compile_for_sm90():
    compile_in_subprocess(SCRIPT)


@pytest.mark.slow
def test_luab_loss_kernel_compiles_for_sm90():
    """The loss kernel's training variants, the largest heat map (fp32 and fp64) and a bare one: a whole heat
    map and a 4096-class block live in registers, with no spills."""
    compile_in_subprocess(LUAB_LOSS)
