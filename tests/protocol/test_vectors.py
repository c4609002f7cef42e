"""The conformance vectors in protocol/vectors/: no drift, and the implementation passes them."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from protocol import (
    Federation,
    RemoteProtocolError,
    check_successor,
    decode_record,
    encode_canonical,
    fold_state,
    parse_genesis,
)
from protocol.chain import validate_chain
from protocol.signal_types import check_authorable, featureless_distance, is_featureless

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"
GENERATOR = ROOT / "scripts" / "generate_vectors.py"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


RECORDS: dict[str, Any] = json.loads((VECTORS / "records.json").read_text(encoding="utf-8"))
FOLD: list[dict[str, Any]] = json.loads((VECTORS / "fold.json").read_text(encoding="utf-8"))
FEDERATION: Federation = parse_genesis(encode_canonical(RECORDS["genesis"]))


def _data(case: dict[str, Any]) -> bytes:
    if "canonical" in case:
        return str(case["canonical"]).encode("utf-8")
    return base64.b64decode(case["bytes_b64"], validate=True)


def test_regenerating_changes_nothing() -> None:
    files = _load_generator().generate()
    assert set(files) == {"records.json", "fold.json"}
    for name, content in files.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == content, (
            f"protocol/vectors/{name} drifted: run python scripts/generate_vectors.py"
        )


def test_check_mode_reports_no_drift() -> None:
    assert _load_generator().main(["--check"]) == 0


def test_files_have_the_documented_shape() -> None:
    assert set(RECORDS) == {"notes", "genesis", "keys", "valid", "invalid", "featureless"}
    for case in RECORDS["featureless"]:
        assert set(case) == {"type", "value", "distance", "featureless"}
    assert len(RECORDS["invalid"]) >= 30
    for key in RECORDS["keys"]:
        assert set(key) == {"seed", "public"}
    for case in RECORDS["valid"]:
        assert set(case) == {"name", "canonical", "id"}
    for case in RECORDS["invalid"]:
        assert set(case) - {"after"} in (
            {"name", "canonical", "error"},
            {"name", "bytes_b64", "error"},
        )
    for case in FOLD:
        assert set(case) == {"name", "now_ms", "records", "state"}
    names = [c["name"] for c in RECORDS["valid"] + RECORDS["invalid"]]
    assert len(names) == len(set(names))
    assert len({c["name"] for c in FOLD}) == len(FOLD)


def test_keys_derive_from_their_seeds() -> None:
    from protocol import SigningKey

    for key in RECORDS["keys"]:
        assert SigningKey.from_hex(key["seed"]).public == key["public"]


def test_genesis_is_signed_by_every_founder() -> None:
    assert FEDERATION.to_json() == RECORDS["genesis"]
    assert sorted(FEDERATION.signatures) == sorted(f.key for f in FEDERATION.founders)


@pytest.mark.parametrize("case", RECORDS["valid"], ids=lambda c: c["name"])
def test_valid_vector_decodes_to_its_id(case: dict[str, Any]) -> None:
    record = decode_record(_data(case), FEDERATION.id)
    assert record.id == case["id"]
    assert record.text == case["canonical"]
    assert encode_canonical(record.to_json()) == record.canonical


@pytest.mark.parametrize("case", RECORDS["invalid"], ids=lambda c: c["name"])
def test_invalid_vector_raises_its_error(case: dict[str, Any]) -> None:
    data = _data(case)
    with pytest.raises(RemoteProtocolError) as raised:
        if "after" in case:
            head = validate_chain([decode_record(t.encode(), FEDERATION.id) for t in case["after"]])
            record = decode_record(data, FEDERATION.id)  # valid on its own
            check_successor(head, record)
        else:
            decode_record(data, FEDERATION.id)
    assert type(raised.value).__name__ == case["error"]


@pytest.mark.parametrize("case", RECORDS["featureless"], ids=lambda c: f"{c['type']}:{c['value']}")
def test_featureless_vector_gives_its_verdict(case: dict[str, Any]) -> None:
    assert featureless_distance(case["type"], case["value"]) == case["distance"]
    assert is_featureless(case["type"], case["value"]) is case["featureless"]
    if case["featureless"]:
        with pytest.raises(RemoteProtocolError):
            check_authorable(case["type"], case["value"])
    else:
        check_authorable(case["type"], case["value"])


def test_a_featureless_signal_is_a_valid_record() -> None:
    """SPEC 5.3: the rule is for authoring and matching, never validity (SPEC 11)."""
    (case,) = [c for c in RECORDS["valid"] if c["name"] == "signal_pdq_degenerate"]
    record = decode_record(_data(case), FEDERATION.id)
    assert is_featureless("pdq", record.to_json()["body"]["value"])


def test_invalid_vectors_cover_every_rejection_class() -> None:
    errors = {case["error"] for case in RECORDS["invalid"]}
    assert errors >= {
        "OversizeError",
        "InvalidUtf8Error",
        "MalformedJsonError",
        "DuplicateKeyError",
        "FloatNotAllowedError",
        "IntegerRangeError",
        "NonCanonicalError",
        "SchemaError",
        "UnsupportedVersionError",
        "UnknownKindError",
        "UnknownSignalTypeError",
        "InvalidHashError",
        "InvalidLabelError",
        "FederationMismatchError",
        "SignatureError",
        "SeqGapError",
        "PrevMismatchError",
    }


@pytest.mark.parametrize("case", FOLD, ids=lambda c: c["name"])
def test_fold_vector_gives_its_state(case: dict[str, Any]) -> None:
    records = [decode_record(t.encode("utf-8"), FEDERATION.id) for t in case["records"]]
    assert fold_state(records, FEDERATION, case["now_ms"]).to_json() == case["state"]
    again = fold_state([*reversed(records), *records], FEDERATION, case["now_ms"])
    assert again.to_json() == case["state"]
