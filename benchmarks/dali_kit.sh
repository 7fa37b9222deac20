#!/usr/bin/env bash
# Packs NVIDIA DALI for the lent GPU machine, whose image lacks it and cannot reach PyPI: run HERE (it
# downloads), then carry the parts over consecutive `run` calls (64 MiB per call; the machine keeps /tmp
# while it stays warm, 30 s after each call), and `benchmarks/gpu_session.sh dali ...` unpacks them.
#
#   bash benchmarks/dali_kit.sh                      # ~4 min: .gpu/dali-py312.tar.xz.part-aa, -ab, -ac (~170 MB)
#   run(carry=[".gpu/dali-py312.tar.xz.part-aa"], command="mkdir -p /tmp/kit && cp .gpu/*.part-* /tmp/kit/")
#   run(carry=[".gpu/dali-py312.tar.xz.part-ab"], command="cp .gpu/*.part-* /tmp/kit/")
#   run(carry=[".gpu/dali-py312.tar.xz.part-ac"], command="cp .gpu/*.part-* /tmp/kit/ && bash benchmarks/gpu_session.sh dali train")
#
# The device's python3 is 3.12 (KINDS.md); DALI 2.4.0 for CUDA 13 and what it loads (nvImageCodec, nvJPEG,
# nvCOMP, its small Python dependencies), unpacked, with the other Pythons' bindings dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
KIT=.gpu
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
grep -qx "/$KIT/" .git/info/exclude 2>/dev/null || echo "/$KIT/" >> .git/info/exclude
mkdir -p "$KIT" "$WORK/whl" "$WORK/site"

${PIP_PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$WORK/whl" \
  nvidia-dali-cuda130==2.4.0 "nvidia-nvimgcodec-cu13>=0.9,<0.10" nvidia-libnvcomp-cu13==5.3.0.16 \
  nvidia-nvjpeg==13.3.2.43 astunparse gast optree nvtx makefun "libcst~=1.8" six 2>&1 | grep -v "WARNING: Location" || true
for w in "$WORK"/whl/*.whl; do python3 -m zipfile -e "$w" "$WORK/site"; done
tag="cpython-${PYVER/./}-x86_64"
find "$WORK/site/nvidia/dali" -maxdepth 1 -name 'backend_impl.cpython-*.so' ! -name "*$tag*" -delete
rm -f "$WORK/site/nvidia/__init__.py"  # a namespace package, so the image's own nvidia.* packages stay visible
rm -f "$KIT"/dali-py*.tar.xz.part-*
tar -C "$WORK/site" -cf - . | xz -9 -T0 | split -b 60m -a 2 - "$KIT/dali-py${PYVER/./}.tar.xz.part-"
ls -la "$KIT"
