"""A signal's provenance packed into a few bytes, for a replica that holds millions.

A replica answers with each hit's provenance exactly as the node shows it (``id``, ``row``,
``author``, ``member``, ``member_name``, ``type``, ``value``, ``labels``, ``note``,
``expires``, ``ts``, ``seq``, ``status``, ``retracted_by``, ``tallies``). As JSON that is
~0.5 KB a signal; packed here it is ~90 bytes plus the value and any note:

- fixed fields in one ``struct``: the record id (32 raw bytes), the author-and-member and
  the label set as numbers into tables kept once (``Packer``: a federation has a few dozen
  authors and few distinct label sets), the type's number, ``ts``, ``seq``, ``expires``
  and the three tallies;
- the value as raw bytes when it is lowercase hex of even length (every hash type's
  canonical form; exactly reversible), else UTF-8; then the note (UTF-8);
- anything else the node's answer carries (a field added in a later version, a tally
  kind not known here) as JSON at the end, so nothing is ever dropped.

``status`` is not kept (worked out at answer time) and ``row`` is the holder's key.
``Packer`` is not thread-safe for packing: its tables grow; unpacking only reads them.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import orjson

_FIXED: Final = struct.Struct("<32sIIBqqqiiiBHI")  # id who labels type ts seq expires
# confirm dispute seen value-is-hex value-len note-len ; then value, note, extra JSON
_NO_EXPIRY: Final = -(2**63)
_KNOWN: Final = frozenset({"id", "row", "author", "member", "member_name", "type", "value",
                           "labels", "note", "expires", "ts", "seq", "status", "retracted_by",
                           "tallies"})  # fmt: skip
_TALLIES: Final = ("confirm", "dispute", "seen")
_HEX: Final = frozenset("0123456789abcdef")


def _is_hex(value: str) -> bool:
    return len(value) % 2 == 0 and _HEX.issuperset(value)


class Packer:
    """Packs and unpacks provenance against its own tables of authors, label sets, types."""

    def __init__(self) -> None:
        self._tables: dict[str, list[Any]] = {"who": [], "labels": [], "type": []}
        self._numbers: dict[str, dict[Any, int]] = {"who": {}, "labels": {}, "type": {}}

    def _number(self, table: str, item: Any) -> int:
        numbers = self._numbers[table]
        number = numbers.get(item)
        if number is None:
            number = numbers[item] = len(self._tables[table])
            self._tables[table].append(item)
        return number

    def pack(self, signal: dict[str, Any]) -> bytes:
        """signal (the node's shape, validated by the caller: id 64 hex, row, type, value)
        as bytes; ``unpack`` gives it back but for ``status`` and ``row``."""
        extra = {k: v for k, v in signal.items() if k not in _KNOWN}
        tallies = signal.get("tallies")
        if (
            not isinstance(tallies, dict)
            or set(tallies) != set(_TALLIES)
            or not all(type(tallies[k]) is int and 0 <= tallies[k] < 2**31 for k in _TALLIES)
        ):
            extra["tallies"] = tallies
            tallies = dict.fromkeys(_TALLIES, 0)
        if signal.get("retracted_by") is not None:
            extra["retracted_by"] = signal["retracted_by"]
        ts, seq, expires = signal.get("ts"), signal.get("seq"), signal.get("expires")
        if not all(type(n) is int and abs(n) < 2**62 for n in (ts, seq)) or not (
            expires is None or (type(expires) is int and abs(expires) < 2**62)
        ):
            extra |= {"ts": ts, "seq": seq, "expires": expires}
            ts = seq = 0
            expires = None
        labels = signal.get("labels")
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            extra["labels"] = labels
            labels = []
        who = (signal.get("author"), signal.get("member"), signal.get("member_name"))
        if not all(x is None or isinstance(x, str) for x in who):
            extra |= dict(zip(("author", "member", "member_name"), who, strict=True))
            who = (None, None, None)
        value = signal["value"]
        is_hex = _is_hex(value)
        raw = bytes.fromhex(value) if is_hex else value.encode()
        note = signal.get("note")
        if note is not None and not isinstance(note, str):
            extra["note"] = note
            note = None
        note_bytes = b"" if note is None else note.encode()
        flags = int(is_hex) | (0 if note is None else 2)
        if len(raw) >= 2**16:
            raise ValueError("a value of 64 KiB or more")
        head = _FIXED.pack(
            bytes.fromhex(signal["id"]),
            self._number("who", who),
            self._number("labels", tuple(labels)),
            self._number("type", signal["type"]),
            ts,
            seq,
            _NO_EXPIRY if expires is None else expires,
            tallies["confirm"],
            tallies["dispute"],
            tallies["seen"],
            flags,
            len(raw),
            len(note_bytes),
        )
        tail = orjson.dumps(extra) if extra else b""
        return head + raw + note_bytes + tail

    def unpack(self, blob: bytes, row: int) -> dict[str, Any]:
        """The signal packed in blob, held under ``row``, in the node's field order
        (``status`` left for the caller to add)."""
        (rid, who, labels, kind, ts, seq, expires, confirm, dispute, seen, flags, value_len,
         note_len) = _FIXED.unpack_from(blob)  # fmt: skip
        at = _FIXED.size
        raw = blob[at : at + value_len]
        at += value_len
        note = blob[at : at + note_len].decode() if flags & 2 else None
        at += note_len
        author, member, member_name = self._tables["who"][who]
        signal: dict[str, Any] = {
            "id": rid.hex(), "row": row, "author": author, "member": member,
            "member_name": member_name, "type": self._tables["type"][kind],
            "value": raw.hex() if flags & 1 else raw.decode(),
            "labels": list(self._tables["labels"][labels]),
            "note": note, "expires": None if expires == _NO_EXPIRY else expires, "ts": ts,
            "seq": seq, "retracted_by": None,
            "tallies": {"confirm": confirm, "dispute": dispute, "seen": seen},
        }  # fmt: skip
        if at < len(blob):
            signal.update(orjson.loads(blob[at:]))
        return signal

    def type_value(self, blob: bytes) -> tuple[str, str]:
        """The signal's type and value, without unpacking the rest."""
        fields = _FIXED.unpack_from(blob)
        raw = blob[_FIXED.size : _FIXED.size + fields[11]]
        return self._tables["type"][fields[3]], raw.hex() if fields[10] & 1 else raw.decode()
