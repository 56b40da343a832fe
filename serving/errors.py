"""The one exception type the server's layers raise for a request that cannot be answered.

Loading, validation and execution code raises :class:`StatusError` with the gRPC status code the client
should see; the gRPC servicers in ``serving/server.py`` are the only place that turns it into a response.
"""

from __future__ import annotations

import grpc


class StatusError(Exception):
    """A request failure carrying the gRPC status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


def invalid_argument(message: str) -> StatusError:
    """A :class:`StatusError` for a malformed request (``INVALID_ARGUMENT``)."""
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> StatusError:
    """A :class:`StatusError` for an unknown model, version or label (``NOT_FOUND``)."""
    return StatusError(grpc.StatusCode.NOT_FOUND, message)


def resource_exhausted(message: str) -> StatusError:
    """A :class:`StatusError` for a request the server lacks the resources to answer (``RESOURCE_EXHAUSTED``)."""
    return StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
