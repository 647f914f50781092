"""Test oracles and fixtures shared by tests and benchmarks (plain Python: no pytest import,
so `infra/bench` can use them too). Production code never imports this package."""
