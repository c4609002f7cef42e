"""Record bodies, one frozen value type per kind (SPEC section 5).

Each body validates itself on construction, knows its JSON form, and is parsed from JSON by
``parse_body``, which first checks the exact set of keys (optional keys are omitted, never
null). Nothing here depends on context: whether a body *counts* (its author is a member, the
signal it names exists) is decided by the fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.encoding import MAX_SAFE_INTEGER, JsonValue, encode_canonical
from protocol.errors import InvalidHashError, SchemaError
from protocol.federation import check_name, check_role
from protocol.keys import SigningKey, is_public_key, is_signature, verify_signature
from protocol.labels import check_labels
from protocol.signal_types import SIGNAL_TYPES, check_type_names, check_value, signal_type
from protocol.urls import normalise_url

ROTATE_DOMAIN = b"hashmesh/rotate/v1\n"
MAX_NOTE_CHARS = 1000
MAX_ENDPOINTS = 8
VERDICTS = ("confirm", "dispute", "seen")
VOTE_ACTIONS = ("admit", "remove")


def _check_hex64(value: object, field: str) -> str:
    if not is_public_key(value):
        raise SchemaError("must be 64 lowercase hex characters", field=field, actual=value)
    assert isinstance(value, str)
    return value


def _check_note(value: object, field: str = "note") -> None:
    if value is None:
        return
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NOTE_CHARS:
        raise SchemaError(
            f"{field} must be a string of 1..{MAX_NOTE_CHARS} characters", field=field
        )


def _check_positive_int(value: object, field: str, minimum: int = 1) -> None:
    if value is None:
        return
    if type(value) is not int or not minimum <= value <= MAX_SAFE_INTEGER:
        raise SchemaError(f"{field} must be an integer >= {minimum}", field=field, actual=value)


def _with_optional(base: dict[str, JsonValue], **optional: JsonValue) -> dict[str, JsonValue]:
    return base | {k: v for k, v in optional.items() if v is not None}


@dataclass(frozen=True, slots=True)
class SignalBody:
    """A member asserts that content with this hash is harmful, for these labels."""

    KIND: ClassVar[str] = "signal"
    type: str
    value: str
    labels: tuple[str, ...] = ()
    note: str | None = None
    expires: int | None = None  # milliseconds since the epoch; None = never

    def __post_init__(self) -> None:
        signal_type(self.type)
        if not isinstance(self.value, str):
            raise SchemaError("value must be a string", field="value")
        check_value(self.type, self.value)
        object.__setattr__(self, "labels", check_labels(self.labels))
        _check_note(self.note)
        _check_positive_int(self.expires, "expires")

    def to_json(self) -> dict[str, JsonValue]:
        base: dict[str, JsonValue] = {
            "type": self.type,
            "value": self.value,
            "labels": list(self.labels),
        }
        return _with_optional(base, note=self.note, expires=self.expires)


@dataclass(frozen=True, slots=True)
class RetractBody:
    """The author withdraws one of its own signals (named by record id)."""

    KIND: ClassVar[str] = "retract"
    signal: str
    reason: str | None = None

    def __post_init__(self) -> None:
        _check_hex64(self.signal, "signal")
        _check_note(self.reason, "reason")

    def to_json(self) -> dict[str, JsonValue]:
        return _with_optional({"signal": self.signal}, reason=self.reason)


@dataclass(frozen=True, slots=True)
class OpinionBody:
    """Any member's verdict on any signal; its latest opinion on a signal replaces earlier ones."""

    KIND: ClassVar[str] = "opinion"
    signal: str
    verdict: str
    labels: tuple[str, ...] = ()
    note: str | None = None

    def __post_init__(self) -> None:
        _check_hex64(self.signal, "signal")
        if self.verdict not in VERDICTS:
            raise SchemaError(
                "unknown verdict", field="verdict", expected="|".join(VERDICTS), actual=self.verdict
            )
        object.__setattr__(self, "labels", check_labels(self.labels))
        _check_note(self.note)

    def to_json(self) -> dict[str, JsonValue]:
        base: dict[str, JsonValue] = {
            "signal": self.signal,
            "verdict": self.verdict,
            "labels": list(self.labels),
        }
        return _with_optional(base, note=self.note)


@dataclass(frozen=True, slots=True)
class AnnounceBody:
    """The member's display name, its node URLs, its TLS public key fingerprint and the signal
    types its node can verify and index (``()``: the member's node does not say; the JSON
    omits ``types`` then, as every announce before the type gate did: SPEC 5.2, 11)."""

    KIND: ClassVar[str] = "announce"
    name: str
    urls: tuple[str, ...] = ()
    tls: str | None = None  # SHA-256 of the node certificate's SubjectPublicKeyInfo, hex
    types: tuple[str, ...] = ()  # strictly ascending type names (syntax only)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.urls, tuple | list) or len(self.urls) > MAX_ENDPOINTS:
            raise SchemaError(f"urls must be a list of at most {MAX_ENDPOINTS}", field="urls")
        object.__setattr__(self, "urls", tuple(self.urls))
        for url in self.urls:
            try:
                normal = isinstance(url, str) and normalise_url(url) == url
            except InvalidHashError:  # not an http(s) URL at all: still a SchemaError here
                normal = False
            if not normal:
                raise SchemaError("urls must be normalised http(s) URLs", field="urls", actual=url)
        if len(set(self.urls)) != len(self.urls):
            raise SchemaError("urls must be distinct", field="urls")
        if self.tls is not None:
            _check_hex64(self.tls, "tls")
        if self.types != ():  # anything else given, [] included, must be 1..64 names
            object.__setattr__(self, "types", check_type_names(self.types))

    def to_json(self) -> dict[str, JsonValue]:
        out = _with_optional({"name": self.name, "urls": list(self.urls)}, tls=self.tls)
        if self.types:
            out["types"] = list(self.types)
        return out


@dataclass(frozen=True, slots=True)
class VoteBody:
    """A member's vote to admit a key (with its name and role) or remove one after a seq."""

    KIND: ClassVar[str] = "vote"
    action: str
    member: str
    name: str | None = None  # admit only
    role: str | None = None  # admit only
    after: int | None = None  # remove only: the target's last counted seq (0 = nothing counts)

    def __post_init__(self) -> None:
        _check_hex64(self.member, "member")
        if self.action == "admit":
            check_name(self.name)
            check_role(self.role)
            if self.after is not None:
                raise SchemaError("an admit vote has no after", field="after")
        elif self.action == "remove":
            if self.name is not None or self.role is not None:
                raise SchemaError("a remove vote has no name or role", field="name")
            if self.after is None:
                raise SchemaError("a remove vote names after", field="after")
            _check_positive_int(self.after, "after", minimum=0)
        else:
            raise SchemaError(
                "unknown vote action", field="action", expected="admit|remove", actual=self.action
            )

    def to_json(self) -> dict[str, JsonValue]:
        base: dict[str, JsonValue] = {"action": self.action, "member": self.member}
        return _with_optional(base, name=self.name, role=self.role, after=self.after)


@dataclass(frozen=True, slots=True)
class RotateBody:
    """The author's log ends here; the member continues under new_key from seq 1.

    ``proof`` is new_key's signature over ``rotation_proof_input(fed, old, new_key)``: the
    rotating member must hold the new key, so it cannot take over another party's key (an
    applicant's, say) and have that key's records counted as its own. The record's decoder
    checks the proof, because only the record knows fed and the old key (its author).
    """

    KIND: ClassVar[str] = "rotate"
    new_key: str
    proof: str

    def __post_init__(self) -> None:
        _check_hex64(self.new_key, "new_key")
        if not is_signature(self.proof):
            raise SchemaError("proof must be 128 lowercase hex", field="proof", actual=self.proof)

    def to_json(self) -> dict[str, JsonValue]:
        return {"new_key": self.new_key, "proof": self.proof}


def rotation_proof_input(fed: str, old: str, new: str) -> bytes:
    """What the new key signs to accept a rotation from old, in federation fed."""
    return ROTATE_DOMAIN + encode_canonical({"fed": fed, "new": new, "old": old})


def rotation(new_key: SigningKey, *, fed: str, old: str) -> RotateBody:
    """A rotate body from old to new_key, with new_key's proof of possession."""
    proof = new_key.sign(rotation_proof_input(fed, old, new_key.public))
    return RotateBody(new_key=new_key.public, proof=proof)


def check_rotation_proof(body: RotateBody, *, fed: str, old: str, seq: int) -> None:
    """Raise SignatureError unless body's proof is new_key's signature for this rotation."""
    verify_signature(
        body.new_key, rotation_proof_input(fed, old, body.new_key), body.proof, seq=seq
    )


Body = SignalBody | RetractBody | OpinionBody | AnnounceBody | VoteBody | RotateBody


def _keys(obj: dict[str, Any], required: frozenset[str], allowed: frozenset[str]) -> None:
    keys = obj.keys()
    if keys <= allowed and keys >= required:
        for name in keys - required:
            if obj[name] is None:  # an absent optional field is omitted, never null
                raise SchemaError("optional fields are omitted, never null", field=name)
        return
    raise SchemaError(
        "body keys do not match its kind",
        field="body",
        expected=",".join(sorted(required)) + f" (allowed: {','.join(sorted(allowed))})",
        actual=",".join(sorted(keys)),
    )


def _keyset(*names: str) -> frozenset[str]:
    return frozenset(names)


_SIGNAL_REQUIRED = _keyset("type", "value", "labels")
_SIGNAL_ALLOWED = _SIGNAL_REQUIRED | {"note", "expires"}
_OPINION_REQUIRED = _keyset("signal", "verdict", "labels")
_ADMIT_KEYS = _keyset("action", "member", "name", "role")
_REMOVE_KEYS = _keyset("action", "member", "after")


# Member names of a signal body in canonical order -> (has note, has expires).
_SIGNAL_SHAPES: dict[tuple[str, ...], tuple[bool, bool]] = {
    ("labels", "type", "value"): (False, False),
    ("labels", "note", "type", "value"): (True, False),
    ("expires", "labels", "type", "value"): (False, True),
    ("expires", "labels", "note", "type", "value"): (True, True),
}
# Label lists already seen valid: most records repeat a few (bounded, so input cannot grow it).
_VALID_LABELS: set[tuple[str, ...]] = set()
_SIGNAL_SLOTS = tuple(SignalBody.__dict__[name].__set__ for name in SignalBody.__slots__)


def signal_fast(obj: dict[str, Any]) -> SignalBody | None:
    """The body when it has the common valid shape, without SignalBody's constructor; else None.

    Every check of ``SignalBody.__post_init__`` and ``_keys`` is made here; anything unusual
    returns None so that the constructor raises the precise error.
    """
    shape = _SIGNAL_SHAPES.get(tuple(obj))
    if shape is None:
        return None
    name, value, labels = obj["type"], obj["value"], obj["labels"]
    note, expires = obj.get("note"), obj.get("expires")
    if shape != (note is not None, expires is not None):  # present means not null
        return None
    if type(name) is not str or type(value) is not str or type(labels) is not list:
        return None
    kind = SIGNAL_TYPES.get(name)
    if kind is None or not kind.is_canonical(value):
        return None
    label_tuple = tuple(labels)
    try:
        known = label_tuple in _VALID_LABELS
    except TypeError:  # a list or object among the labels: unhashable
        return None
    if not known:
        if not all(type(label) is str for label in label_tuple):
            return None
        try:
            check_labels(label_tuple)
        except SchemaError:
            return None
        if len(_VALID_LABELS) < 4096:
            _VALID_LABELS.add(label_tuple)
    if note is not None and (type(note) is not str or not 0 < len(note) <= MAX_NOTE_CHARS):
        return None
    if expires is not None and (type(expires) is not int or not 1 <= expires <= MAX_SAFE_INTEGER):
        return None
    return new_signal_body(name, value, label_tuple, note, expires)


def new_signal_body(
    type_: str, value: str, labels: tuple[str, ...], note: str | None, expires: int | None
) -> SignalBody:
    """A SignalBody from checked fields, without its constructor's checks: for ``signal_fast``
    and for bytes decoded before (``protocol.batch.trusted_record``). Never for input."""
    body = object.__new__(SignalBody)
    set_type, set_value, set_labels, set_note, set_expires = _SIGNAL_SLOTS
    set_type(body, type_)
    set_value(body, value)
    set_labels(body, labels)
    set_note(body, note)
    set_expires(body, expires)
    return body


def _parse_signal(obj: dict[str, Any]) -> Body:
    return signal_fast(obj) or parse_signal_checked(obj)


def parse_signal_checked(obj: dict[str, Any]) -> SignalBody:
    """A signal body through its constructor: every check, and the precise error."""
    _keys(obj, _SIGNAL_REQUIRED, _SIGNAL_ALLOWED)
    return SignalBody(
        type=obj["type"],
        value=obj["value"],
        labels=obj["labels"],
        note=obj.get("note"),
        expires=obj.get("expires"),
    )


def _parse_retract(obj: dict[str, Any]) -> Body:
    _keys(obj, _keyset("signal"), _keyset("signal", "reason"))
    return RetractBody(signal=obj["signal"], reason=obj.get("reason"))


def _parse_opinion(obj: dict[str, Any]) -> Body:
    _keys(obj, _OPINION_REQUIRED, _OPINION_REQUIRED | {"note"})
    return OpinionBody(
        signal=obj["signal"],
        verdict=obj["verdict"],
        labels=obj["labels"],
        note=obj.get("note"),
    )


def _parse_announce(obj: dict[str, Any]) -> Body:
    _keys(obj, _keyset("name", "urls"), _keyset("name", "urls", "tls", "types"))
    if not isinstance(obj["urls"], list):
        raise SchemaError("urls must be a list", field="urls")
    # present, types is 1..64 names (checked by the body; none is written by omitting it)
    types = obj.get("types", ())
    return AnnounceBody(name=obj["name"], urls=tuple(obj["urls"]), tls=obj.get("tls"), types=types)


def _parse_vote(obj: dict[str, Any]) -> Body:
    if obj.get("action") == "admit":
        _keys(obj, _ADMIT_KEYS, _ADMIT_KEYS)
    else:
        _keys(obj, _REMOVE_KEYS, _REMOVE_KEYS)
    return VoteBody(
        action=obj["action"],
        member=obj["member"],
        name=obj.get("name"),
        role=obj.get("role"),
        after=obj.get("after"),
    )


def _parse_rotate(obj: dict[str, Any]) -> Body:
    _keys(obj, _keyset("new_key", "proof"), _keyset("new_key", "proof"))
    return RotateBody(new_key=obj["new_key"], proof=obj["proof"])


BODY_TYPES: dict[str, Callable[[dict[str, Any]], Body]] = {
    "signal": _parse_signal,
    "retract": _parse_retract,
    "opinion": _parse_opinion,
    "announce": _parse_announce,
    "vote": _parse_vote,
    "rotate": _parse_rotate,
}


def parse_body(kind: str, value: object) -> Body:
    if not isinstance(value, dict):
        raise SchemaError("body must be an object", field="body")
    return BODY_TYPES[kind](value)
