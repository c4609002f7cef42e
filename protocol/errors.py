"""Every error the protocol core raises.

Tree::

    ProtocolError                    root: anything protocol/ raises on purpose
    ├── LocalProtocolError           the local side tried what the protocol forbids, or broke
    │   │                            an API contract (a bug on our side)
    │   └── AuthoringError           this member may not sign this body now (SPEC 4.5);
    │       │                        ``title`` and ``status`` for the CLI and the local API
    │       ├── NotAMemberError      the key is not a member's                        (409)
    │       ├── AuditorError         an auditor authors nothing                       (409)
    │       ├── ClosedLogError       a removed, forked or rotated-away key             (409)
    │       ├── UnknownSignalError   a retract names no counted signal                (404)
    │       ├── NotContributorError  only the contributor retracts                    (403)
    │       ├── AlreadyRetractedError  retract or opinion on a retracted signal       (409)
    │       ├── AlreadyVotedError    the identity cast this vote already              (409)
    │       ├── OwnSignalError       an opinion on the member's own signal            (422)
    │       └── TypeNotEnabledError  a signal type not every member's node announced  (409)
    └── RemoteProtocolError          bytes from outside do not satisfy the protocol
        ├── EncodingError            not the canonical JSON of SPEC section 2
        │   ├── OversizeError        more than MAX_RECORD_BYTES, checked before parsing
        │   ├── InvalidUtf8Error
        │   ├── MalformedJsonError
        │   ├── DuplicateKeyError
        │   ├── FloatNotAllowedError
        │   ├── IntegerRangeError    |n| > 2^53 - 1
        │   └── NonCanonicalError    valid JSON, but not byte-identical to its JCS form
        ├── SchemaError              canonical JSON that is not a valid record
        │   ├── UnsupportedVersionError
        │   ├── UnknownKindError
        │   ├── UnknownSignalTypeError
        │   ├── InvalidHashError
        │   └── InvalidLabelError
        ├── FederationMismatchError  the record names another federation
        ├── SignatureError           Ed25519 signature does not verify
        ├── ChainError               the record does not extend its author's log
        │   ├── SeqGapError
        │   └── PrevMismatchError
        ├── MembershipError          the author may not author records here
        ├── ForkEvidenceError        a claimed fork proof does not prove a fork
        ├── GenesisError             the federation document is invalid
        └── SyncError                a sync message is malformed

Every ``RemoteProtocolError`` carries structured fields (author, seq, record id, field,
expected and actual value) and an HTTP status hint, so the node can answer a peer with a
precise problem body and an auditor can list violations by record.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProtocolError(Exception):
    """Root of everything the protocol core raises."""

    def diagnostics(self) -> str:
        return f"{type(self).__name__}: {self}"


class LocalProtocolError(ProtocolError):
    """The local side tried what the protocol forbids, or used the API wrongly; never
    caused by remote bytes."""


class AuthoringError(LocalProtocolError):
    """This member may not sign this body now (``protocol.authoring``, SPEC 4.5)."""

    status: int = 409
    title: str = "may not author"

    def diagnostics(self) -> str:
        return f"{self.title}: {self}"

    def fields(self) -> dict[str, object]:
        """Structured details for a problem body, beside the message (none by default)."""
        return {}


class NotAMemberError(AuthoringError):
    title = "not a member"


class AuditorError(AuthoringError):
    title = "an auditor authors nothing"


class ClosedLogError(AuthoringError):
    title = "log closed"


class UnknownSignalError(AuthoringError):
    status = 404
    title = "no such signal"


class NotContributorError(AuthoringError):
    status = 403
    title = "not this member's signal"


class AlreadyRetractedError(AuthoringError):
    title = "already retracted"


class AlreadyVotedError(AuthoringError):
    title = "already voted"


class OwnSignalError(AuthoringError):
    status = 422
    title = "own signal"


class TypeNotEnabledError(AuthoringError):
    """A signal of a type that is not enabled in the federation yet (SPEC 4.5, 11): the nodes
    of ``waiting_for`` (member identity, name) have not announced that they know it."""

    title = "signal type not enabled"

    def __init__(
        self, message: str, *, signal_type: str, waiting_for: tuple[tuple[str, str], ...]
    ) -> None:
        super().__init__(message)
        self.signal_type = signal_type
        self.waiting_for = waiting_for

    def fields(self) -> dict[str, object]:
        return {
            "signal_type": self.signal_type,
            "waiting_for": [{"identity": i, "name": n} for i, n in self.waiting_for],
        }


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """Where a remote error was found: which record, which field, what was wrong."""

    author: str | None = None
    seq: int | None = None
    record_id: str | None = None
    field: str | None = None
    expected: str | None = None
    actual: str | None = None


class RemoteProtocolError(ProtocolError):
    """Bytes from outside (a peer, a file, a user) do not satisfy the protocol."""

    status: int = 400

    def __init__(
        self,
        message: str,
        *,
        author: str | None = None,
        seq: int | None = None,
        record_id: str | None = None,
        field: str | None = None,
        expected: object = None,
        actual: object = None,
    ) -> None:
        super().__init__(message)
        self.context = ErrorContext(
            author=author,
            seq=seq,
            record_id=record_id,
            field=field,
            expected=None if expected is None else str(expected),
            actual=None if actual is None else _clip(str(actual)),
        )

    @property
    def code(self) -> str:
        """The error's class name: the stable name used in vectors and problem bodies."""
        return type(self).__name__

    def to_json(self) -> dict[str, object]:
        fields = {k: getattr(self.context, k) for k in ErrorContext.__slots__}
        return {"error": self.code, "detail": str(self)} | {
            k: v for k, v in fields.items() if v is not None
        }

    def diagnostics(self) -> str:
        parts = [f"{self.code}: {self}"]
        ctx = self.context
        if ctx.author is not None:
            parts.append(f"author={ctx.author[:16]}… seq={ctx.seq}")
        if ctx.record_id is not None:
            parts.append(f"record={ctx.record_id}")
        if ctx.expected is not None or ctx.actual is not None:
            parts.append(f"expected {ctx.expected!r}, got {ctx.actual!r}")
        return "; ".join(parts)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class EncodingError(RemoteProtocolError):
    """Not the canonical JSON encoding (RFC 8785 restricted to the protocol's value space)."""


class OversizeError(EncodingError):
    status = 413


class InvalidUtf8Error(EncodingError):
    pass


class MalformedJsonError(EncodingError):
    pass


class DuplicateKeyError(EncodingError):
    pass


class FloatNotAllowedError(EncodingError):
    pass


class IntegerRangeError(EncodingError):
    pass


class NonCanonicalError(EncodingError):
    pass


class SchemaError(RemoteProtocolError):
    """Canonical JSON that is not a valid record, body or document."""


class UnsupportedVersionError(SchemaError):
    pass


class UnknownKindError(SchemaError):
    pass


class UnknownSignalTypeError(SchemaError):
    pass


class InvalidHashError(SchemaError):
    pass


class InvalidLabelError(SchemaError):
    pass


class FederationMismatchError(RemoteProtocolError):
    pass


class SignatureError(RemoteProtocolError):
    status = 401


class ChainError(RemoteProtocolError):
    status = 409


class SeqGapError(ChainError):
    pass


class PrevMismatchError(ChainError):
    pass


class MembershipError(RemoteProtocolError):
    status = 403


class ForkEvidenceError(RemoteProtocolError):
    pass


class GenesisError(RemoteProtocolError):
    pass


class SyncError(RemoteProtocolError):
    pass
