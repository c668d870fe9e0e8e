"""Metrics helpers shared by every part: bounded label values and the metrics HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import start_http_server

log = logging.getLogger("switchboard.metrics")

OTHER = "other"


class BoundedLabels:
    """Maps free-form values (event names from clients or services) onto a bounded label set.

    Known values pass through; the first ``limit`` unknown ones are admitted as seen; anything
    after that becomes ``other``, so a client inventing event names cannot blow up the
    number of time series.
    """

    def __init__(self, known: Iterable[str] = (), limit: int = 100) -> None:
        self.values: set[str] = set(known)
        self.limit = limit

    def __call__(self, value: str) -> str:
        if value in self.values:
            return value
        if len(self.values) < self.limit and len(value) <= 64:
            self.values.add(value)
            return value
        return OTHER

    def add(self, values: Iterable[str]) -> None:
        self.values.update(values)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the default registry on ``http://host:port/metrics`` (0 disables it)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
