"""Benchmark testbed for shoal: network namespaces, tc shaping, bounds, baselines, plots.

Nothing here is imported by `seeder/`, `peer/` or `common/`; it only drives them from outside,
the way an operator would, on an emulated fleet built from Linux network namespaces.
"""
