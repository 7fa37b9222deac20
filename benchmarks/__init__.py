"""luab_fast's benchmark suite: ours beside the baseline people use today, in one process, on the same
inputs; ratios, throughput and peak memory recorded with device, versions and date.

Run it all with ``python -m benchmarks.run [--mode quick|full]`` (see benchmarks/README.md).
"""
