"""Harnesses for notebooks, tests and benchmarks: a live gateway in process (`lab`), node processes (`nodes`)."""
