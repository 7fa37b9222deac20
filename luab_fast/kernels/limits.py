"""The kernels' numeric limits, defined once: the ops check inputs against them (without importing triton),
the kernels rely on them.

- ``FIX_SCALE``: the label-pool kernel accumulates class scores in int64 fixed point (order-independent sums,
  deterministic under atomics); 2**40 keeps ~12 decimal digits below the point (the jitted code writes the
  literal 1099511627776.0: a plain global cannot be read inside ``@triton.jit``).
- ``MAX_ABS_SCORE``: |w·v·2**40| summed over a bin stays below 2**62 when Σw ≤ 1 after the count division, so
  scores must satisfy |score| < 2**22 — on every backend, so that the answer never depends on the backend.
- ``MAX_HEAT_CELLS``: the luab_loss kernel holds one heat map in one vector; 4096 cells compile without
  spills (tests); larger maps go to the reference backend.
"""

FIX_SCALE = 2.0 ** 40
MAX_ABS_SCORE = 2.0 ** 22
MAX_HEAT_CELLS = 4096
