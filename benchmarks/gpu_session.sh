#!/usr/bin/env bash
# The device checks of a session that is lent a GPU, as one prepared command (the `device` tool's `run`):
#
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=590)
#   run(command="bash benchmarks/gpu_session.sh tests", timeout_s=590)     # a second call, if time is left
#
# Stages (default: train kernels): build = luab_fast._C for the device's Python (its image has torch,
# triton, timm, pybind11, cmake, pytest, pytest-benchmark; no DALI, no crowd-kit), run first whenever
# luab_fast._C does not import (a fresh machine); train = issue 7's
# `benchmarks.run --mode full -k train` (ResNet-50 bf16 img/s, LUAB extras); kernels = `-k "gpu or pipeline"`, the GPU
# benchmarks of the ops (label pooling, ReLabel loss, rasterisation, fused loss) and, once `dali` has run, the
# loader's (DALI with nvJPEG, target >= 5,000 img/s; skipped without DALI); tests = the kernel, data and trainer
# tests, which run their Triton kernels compiled on the GPU; dali = unpack DALI from the parts that
# benchmarks/dali_kit.sh made and earlier calls left in /tmp/kit (then the loader decodes with nvJPEG).
#
# Everything lands in $OUT (or ./gpu_out without one): one log per stage and the results JSON of each
# benchmark run; copy the JSON into benchmarks/results/ afterwards. Each stage has its own time limit and
# none starts after DEADLINE_S seconds (default 540), so a 590 s call always returns its logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
DEADLINE_S=${DEADLINE_S:-540}
PY=${PYTHON:-python3}
DALI_SITE=/tmp/dali_site
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$DALI_SITE${PYTHONPATH:+:$PYTHONPATH}" LUAB_FAST_CACHE=/tmp/luab_fast_cache
start=$(date +%s)
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(train kernels)

left() { echo $(( DEADLINE_S - ($(date +%s) - start) )); }

stage() {  # stage NAME LIMIT_S COMMAND...: runs COMMAND under min(LIMIT_S, time left), logs to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local budget; budget=$(left)
  if [ "$budget" -lt 30 ]; then echo "gpu_session: $name skipped, ${budget} s left" | tee -a "$OUT/summary.log"; return 1; fi
  [ "$limit" -gt "$budget" ] && limit=$budget
  local t0; t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "gpu_session: $name exit $rc in $(( $(date +%s) - t0 )) s (limit $limit s)" | tee -a "$OUT/summary.log"
  return $rc
}

built() { "$PY" -c "import luab_fast._C" 2>/dev/null; }

{
  echo "gpu_session: $(date -u +%FT%TZ) stages: ${stages[*]}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c "import sys, torch, triton, timm; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())" 2>&1
  "$PY" -c "import nvidia.dali as d; print('dali', d.__version__)" 2>/dev/null || echo "no DALI: the loader decodes with the torchvision backend"
} | tee "$OUT/summary.log"

if ! built || [[ " ${stages[*]} " == *" build "* ]]; then
  stage build 240 "$PY" setup.py build_ext --inplace || { echo "gpu_session: build failed, see build.log"; tail -30 "$OUT/build.log"; exit 1; }
fi

for s in "${stages[@]}"; do
  case $s in
    build) ;;
    dali) stage dali 150 bash -c "set -o pipefail; rm -rf $DALI_SITE && mkdir -p $DALI_SITE && \
            cat /tmp/kit/dali-py*.tar.xz.part-* | $PY -c 'import lzma, sys, tarfile; \
            tarfile.open(fileobj=lzma.open(sys.stdin.buffer), mode=\"r|\").extractall(sys.argv[1])' $DALI_SITE && \
            $PY -c 'import nvidia.dali as d; print(\"dali\", d.__version__)'" || exit 1 ;;
    train) stage train 400 "$PY" -m benchmarks.run --mode full -k train --no-memory --out "$OUT" ;;
    kernels) stage kernels 200 "$PY" -m benchmarks.run --mode full -k "gpu or pipeline" \
               --no-memory --out "$OUT" ;;
    tests) stage tests 420 "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml" \
             tests/test_label_pool.py tests/test_label_pool_triton.py tests/test_rasterize.py tests/test_luab_loss.py \
             tests/test_relabel_cross_entropy.py tests/test_relabel_store.py tests/test_byproducts_store.py \
             tests/test_data_loader.py tests/test_kernels_compile.py tests/test_ext.py tests/test_train.py \
             tests/test_train_inputs.py ;;
    *) echo "gpu_session: unknown stage $s (build, dali, train, kernels, tests)"; exit 2 ;;
  esac
done
echo "gpu_session: done in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.log"
grep -haE "^\| [a-z_]+ \|" "$OUT"/*.log 2>/dev/null | sort -u
grep -haE "passed|failed" "$OUT/tests.log" 2>/dev/null | tail -2
