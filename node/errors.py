"""Errors raised by the node (the imperative shell).

Tree::

    NodeError                  root of everything node/ raises on purpose
    ├── ConfigError            the node home or its configuration is missing or invalid
    ├── StoreError             the database cannot be opened or used
    │   └── StoreRefusedError  corrupt, from a newer schema, or of another federation
    ├── MediaError             media bytes that cannot be hashed (not an image, too big, a bomb)
    ├── PeerError              a peer misbehaved or could not be reached
    ├── ApiError               a local API request failed (carries the HTTP status)
    └── InputError             a file or argument the operator gave is not valid input

Errors caused by bytes from a peer that fail protocol validation are
``protocol.errors.RemoteProtocolError``; the node never wraps them silently.
Every error has ``diagnostics()`` for the CLI boundary and ``status`` for the HTTP one.
"""

from __future__ import annotations

from protocol.errors import AuthoringError


class NodeError(Exception):
    """Root of the node's errors."""

    status: int = 500
    title: str = "node error"

    def __init__(
        self, message: str, *, status: int | None = None, title: str | None = None
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if title is not None:  # what failed, for a problem body's title
            self.title = title

    def diagnostics(self) -> str:
        return f"{self.title}: {self}"


class ConfigError(NodeError):
    status = 400
    title = "configuration error"


class StoreError(NodeError):
    status = 500
    title = "store error"


class StoreRefusedError(StoreError):
    title = "database refused"


class MediaError(NodeError):
    status = 422
    title = "cannot hash media"


class PeerError(NodeError):
    status = 502
    title = "peer error"


class ApiError(NodeError):
    status = 400
    title = "request failed"


class InputError(NodeError):
    status = 400
    title = "bad input"


def refused(error: AuthoringError) -> ApiError:
    """A refusal of the authoring rules (``protocol.authoring``) as the local API answers it:
    its status (403, 404, 409, 422) and title ("already retracted", "own signal", ...)."""
    return ApiError(str(error), status=error.status, title=error.title)
