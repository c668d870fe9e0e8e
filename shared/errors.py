"""The one exception hierarchy shared by every part.

Only :class:`ClientError` (and its subclasses) carry text that may reach a client; every other
exception is logged and answered with a generic message, so internal details never leak.
"""


class SwitchboardError(Exception):
    """Base of every error raised on purpose by switchboard code."""


class ConfigError(SwitchboardError):
    """A configuration value is missing or invalid."""


class EnvelopeError(SwitchboardError):
    """A ZeroMQ message could not be decoded into an envelope (peer bug or version skew)."""


class ServiceUnavailable(SwitchboardError):
    """A request got no reply before its deadline."""

    client_message = "service unavailable"


class ClientError(SwitchboardError):
    """An error whose message is written for, and sent to, the client that caused it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Fenced(ClientError):
    """A write refused because this instance no longer holds what it was written under (its
    ownership lease lapsed, or the members changed): another instance may own it now."""

    def __init__(self, reason: str) -> None:
        super().__init__(ServiceUnavailable.client_message)
        self.reason = reason


class Refused(ClientError):
    """A namespace CONNECT is refused; ``message`` becomes CONNECT_ERROR ``data.message``."""
