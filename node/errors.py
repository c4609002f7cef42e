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
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        fields: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if title is not None:  # what failed, for a problem body's title
            self.title = title
        self.fields = fields or {}  # further members of a problem body

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


# ---- error text for people (the CLI boundary) ----------------------------------------------

PROTOCOL_KINDS = {
    "OversizeError": "record too large",
    "InvalidUtf8Error": "not UTF-8",
    "MalformedJsonError": "malformed JSON",
    "DuplicateKeyError": "duplicate JSON key",
    "FloatNotAllowedError": "fractional number",
    "IntegerRangeError": "integer out of range",
    "NonCanonicalError": "not canonical JSON",
    "EncodingError": "not canonical JSON",
    "UnsupportedVersionError": "unsupported version",
    "UnknownKindError": "unknown record kind",
    "UnknownSignalTypeError": "unknown signal type",
    "InvalidHashError": "invalid hash",
    "InvalidLabelError": "invalid label",
    "SchemaError": "invalid value",
    "FederationMismatchError": "another federation",
    "SignatureError": "bad signature",
    "SeqGapError": "gap in a log",
    "PrevMismatchError": "broken chain",
    "ChainError": "broken chain",
    "MembershipError": "not a member",
    "ForkEvidenceError": "invalid fork evidence",
    "GenesisError": "invalid federation document",
    "SyncError": "invalid sync message",
    "LocalProtocolError": "not allowed",
}
"""The words the CLI prints for a protocol error's class (never the class name itself)."""


def error_kind(error: BaseException) -> str:
    """What kind of error this is, in words ("invalid hash", "bad signature")."""
    if isinstance(error, NodeError):
        return error.title
    for cls in type(error).__mro__:
        if cls.__name__ in PROTOCOL_KINDS:
            return PROTOCOL_KINDS[cls.__name__]
    return "error"


def explain(error: BaseException, *, kind: bool = True) -> str:
    """One line for an operator: the kind of error (optional), the message, and for a protocol
    error where it was found and the offending value -- no class names, no "expected None"."""
    from protocol.errors import RemoteProtocolError

    text = str(error)
    if isinstance(error, RemoteProtocolError):
        ctx, where = error.context, []
        if ctx.field is not None and text.startswith("must "):  # a message without its subject
            text = f"{ctx.field} {text}"
        if ctx.author is not None:
            seq = "" if ctx.seq is None else f" seq {ctx.seq}"
            where.append(f"author {ctx.author[:16]}…{seq}")
        if ctx.record_id is not None:
            where.append(f"record {ctx.record_id}")
        if ctx.actual is not None:
            expected = f"expected {ctx.expected}, " if ctx.expected is not None else ""
            where.append(f"{expected}got {ctx.actual!r}")
        text += f" ({'; '.join(where)})" if where else ""
    return f"{error_kind(error)}: {text}" if kind else text


def refused(error: AuthoringError) -> ApiError:
    """A refusal of the authoring rules (``protocol.authoring``) as the local API answers it:
    its status (403, 404, 409, 422) and title ("already retracted", "own signal", ...)."""
    return ApiError(str(error), status=error.status, title=error.title, fields=error.fields())
