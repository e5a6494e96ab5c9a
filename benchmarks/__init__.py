"""Benchmarks: load generators and their reports (JSON under benchmarks/out/, gitignored)."""
