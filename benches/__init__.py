"""pytest-benchmark suites: `pytest benches --benchmark-only` (see README.md)."""
