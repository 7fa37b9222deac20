"""Opens an ImageNet-AB store of 1,281,167 synthetic samples (one record, 20 trace points each) and times
open and one id lookup: the issue asks for < 1 s at ImageNet scale.

    python benchmarks/byproduct_store_scale.py      # ~40 s to pack, ~1.5 GB peak
"""
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from luab_fast.byproducts import ByproductStore, ImageNetRecord, ImageNetSample, write_imagenet_store

N = 1_281_167
rng = np.random.default_rng(0)
def gen():
    for k in range(N):
        trace = rng.random((20, 2), dtype=np.float32)
        r = ImageNetRecord(worker_id=f"{k % 1705:010X}", hit_id="H" * 30, assignment_id=f"{k // 480:030d}",
                           page_idx=k % 10, selected=True, selected_count=1, estimate_time=700,
                           image_width=243, image_height=243, original_width=500, original_height=375,
                           click_xy=trace[-1:], click_t=np.array([1_640_000_000_500], np.int64),
                           trace_xy=trace, trace_t=1_640_000_000_000 + 40 * np.arange(20, dtype=np.int64))
        yield ImageNetSample(f"n{k % 1000:08d}_{k}", f"n{k % 1000:08d}", records=[r])
t = time.perf_counter()
p = write_imagenet_store(gen(), str(Path(tempfile.mkdtemp()) / "big.store"))
print("pack", round(time.perf_counter() - t, 1), "s")
for _ in range(3):
    t = time.perf_counter()
    st = ByproductStore.open(p)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    r = st.row("n00000123_1000123")
    dl = time.perf_counter() - t
    print("open", round(dt * 1e3, 1), "ms", "row", r, round(dl * 1e6), "us", len(st))
print("maxrss GB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
