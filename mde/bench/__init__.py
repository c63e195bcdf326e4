"""Benchmark helpers shared by `benchmarks/` scripts and (later) `mde bench`."""
