import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bench: runs bench/ (python -m bench) in its quick mode, a functional check "
        "of the benchmark harness, not a speed assertion")
