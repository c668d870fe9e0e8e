"""Plain HTTP routes of the gateway beyond the protocol and operations endpoints
(the web app's pages and static files). Extended by the web app; returns None for paths
it does not serve."""

from __future__ import annotations

from websockets.http11 import Request, Response


class WebRoutes:
    def handle(self, path: str, request: Request) -> Response | None:
        return None
