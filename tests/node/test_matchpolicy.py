"""Match policy (node.matchpolicy): [match] is read strictly, and a hit is judged by the rules
that apply to it -- the request's, else its labels' strictest, else the node's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.config import load_config
from node.errors import ApiError, ConfigError
from node.matchpolicy import (
    Judge,
    MatchPolicy,
    Overrides,
    Rules,
    parse_config,
    parse_overrides,
    resolve_members,
)

OWN, OTHER, THIRD = "a" * 64, "b" * 64, "c" * 64


def hit(member: str = OTHER, labels: tuple[str, ...] = (), confirm: int = 0, dispute: int = 0
        ) -> dict[str, Any]:  # fmt: skip
    return {"member": member, "labels": list(labels),
            "tallies": {"confirm": confirm, "dispute": dispute, "seen": 0}}  # fmt: skip


def loaded(tmp_path: Path, text: str) -> MatchPolicy:
    (tmp_path / "config.toml").write_text(f'name = "n"\n{text}')
    return load_config(tmp_path, env={}).match


def test_defaults_are_the_registry_radii_and_no_filter() -> None:
    policy = MatchPolicy()
    assert [policy.node_radius(t) for t in ("pdq", "phash", "dhash", "md5", "url")] == [
        31, 10, 10, 0, 0,
    ]  # fmt: skip
    judge = Judge(policy, own=OWN)
    assert not judge.filters
    assert judge.verdict(hit(dispute=5)) is None
    assert judge.search_radius("pdq") == 31


def test_config_is_read_into_the_policy(tmp_path: Path) -> None:
    policy = loaded(tmp_path, """
[match]
min_confirmations = 2
max_dispute_share = 40
ignore_members = ["Other Org", "bbbb"]
[match.radius]
pdq = 20
[match.labels."entity:urgent"]
min_confirmations = 0
radius = { pdq = 40 }
[match.labels."entity:noise"]
ignore = true
[match.lists."under-review"]
radius = { pdq = 8 }
""")  # fmt: skip
    assert policy.node_radius("pdq") == 20 and policy.node_radius("phash") == 10
    assert (policy.min_confirmations, policy.max_dispute_share) == (2, 40.0)
    assert policy.ignore_members == ("Other Org", "bbbb")
    assert policy.labels["entity:urgent"] == Rules({"pdq": 40}, 0, None, False)
    assert policy.labels["entity:noise"].ignore
    assert policy.list_radius("under-review", "pdq") == 8
    assert policy.list_radius("under-review", "phash") == 10  # the node's, where unset
    assert policy.list_radius("other", "pdq") == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[match.radius]\npdq = 257\n", "a pdq radius is an integer 0..256 (its bits), got 257"),
        ("[match.radius]\nphash = -1\n", "a phash radius is an integer 0..64"),
        ("[match.radius]\npdq = 3.5\n", "a pdq radius is an integer"),
        ("[match.radius]\nsha256 = 1\n", "sha256 matches exactly and takes no radius"),
        ("[match.radius]\nvpdq = 1\n", "vpdq is matched by its frames"),
        ("[match.radius]\nnope = 1\n", "'nope' is not a signal type"),
        ("[match]\nradius = 3\n", "radius must be a table"),
        ("[match]\nmin_confirmations = -1\n", "min_confirmations: must be a non-negative"),
        ("[match]\nmin_confirmations = true\n", "min_confirmations: must be a non-negative"),
        ("[match]\nmax_dispute_share = 100.5\n", "max_dispute_share: must be a percentage"),
        ('[match]\nmax_dispute_share = "50"\n', "max_dispute_share: must be a percentage"),
        ('[match]\nignore_members = "a"\n', "ignore_members must be a list"),
        ('[match]\nignore_members = [""]\n', "'' is not a member name or key"),
        ("[match]\nlabels = 1\n", "[match.labels] must be a table"),
        ('[match.labels."Bad Label"]\nignore = true\n', "'Bad Label' is not a label"),
        ('[match.labels."entity:x"]\nignore = 1\n', "ignore must be true or false"),
        ('[match.labels."entity:x"]\nignore_members = []\n', "unknown key(s)"),
        ('[match.lists."Bad"]\nradius = {}\n', "'Bad' is not a list name"),
        ('[match.lists."ok"]\nmin_confirmations = 1\n', "unknown key(s)"),
        ('[match.lists."ok"]\nradius = { pdq = 999 }\n', "a pdq radius is an integer 0..256"),
        ("[match]\nradios = 3\n", "unknown key(s) in [match]: radios"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        loaded(tmp_path, text)
    assert message in str(refused.value)


def test_a_label_setting_replaces_the_node_one_and_the_strictest_label_wins() -> None:
    policy = MatchPolicy(
        min_confirmations=1,
        max_dispute_share=50,
        labels={"entity:urgent": Rules(min_confirmations=0),
                "entity:contested": Rules(min_confirmations=3, max_dispute_share=10),
                "entity:noise": Rules(ignore=True)},
    )  # fmt: skip
    judge = Judge(policy, own=OWN)
    assert judge.verdict(hit())["policy"] == "min_confirmations"  # type: ignore[index]
    assert judge.verdict(hit(labels=("entity:urgent",))) is None
    both = judge.verdict(hit(labels=("entity:contested", "entity:urgent"), confirm=2))
    assert both == {"policy": "min_confirmations", "required": 3, "confirmations": 2}
    shared = judge.verdict(hit(labels=("entity:contested",), confirm=9, dispute=2))
    assert shared == {"policy": "max_dispute_share", "max": 10, "share": 18.2}
    assert judge.verdict(hit(labels=("entity:noise",), confirm=9)) == {
        "policy": "labels", "label": "entity:noise",
    }  # fmt: skip
    assert judge.verdict(hit(member=OWN, labels=("entity:noise",))) is None  # its own


def test_dispute_share_is_of_confirms_and_disputes() -> None:
    judge = Judge(MatchPolicy(max_dispute_share=50), own=OWN)
    assert judge.verdict(hit()) is None  # no opinion: share 0
    assert judge.verdict(hit(confirm=1, dispute=1)) is None  # 50% is not above 50
    assert judge.verdict(hit(confirm=1, dispute=2)) == {
        "policy": "max_dispute_share", "max": 50, "share": 66.7,
    }  # fmt: skip


def test_request_overrides_replace_node_and_label_settings() -> None:
    policy = MatchPolicy(min_confirmations=5, labels={"entity:x": Rules(min_confirmations=9)})
    judge = Judge(policy, Overrides(min_confirmations=0), own=OWN)
    assert judge.filters and judge.verdict(hit(labels=("entity:x",))) is None
    ignoring = Judge(MatchPolicy(), own=OWN, ignored=frozenset({THIRD}))
    assert ignoring.verdict(hit(member=THIRD, confirm=3)) == {
        "policy": "ignore_members", "member": THIRD,
    }  # fmt: skip


def test_each_hit_is_held_to_its_own_radius() -> None:
    policy = MatchPolicy(radius={"pdq": 20}, labels={
        "entity:wide": Rules(radius={"pdq": 40}), "entity:narrow": Rules(radius={"pdq": 5}),
    })  # fmt: skip
    judge = Judge(policy, own=OWN)
    assert judge.search_radius("pdq") == 40  # the largest any rule allows
    assert judge.search_radius("phash") == 10 and judge.search_radius("md5") == 0
    assert judge.hit_radius("pdq", [], None) == 20
    assert judge.hit_radius("pdq", ["entity:wide"], None) == 40
    assert judge.hit_radius("pdq", ["entity:wide", "entity:narrow"], None) == 5
    assert judge.hit_radius("pdq", ["entity:wide"], 12) == 12  # the request's radius
    per_type = Judge(policy, Overrides(radius={"pdq": 7}), own=OWN)
    assert (
        per_type.search_radius("pdq") == 7
        and per_type.hit_radius("pdq", ["entity:wide"], None) == 7
    )
    assert per_type.search_radius("phash") == 10


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ({"radius": {"pdq": 300}}, "invalid radius"),
        ({"radius": {"url": 1}}, "invalid radius"),
        ({"radius": []}, None),  # not a dict: the caller's integer check refuses it
        ({"min_confirmations": 1.5}, "invalid min_confirmations"),
        ({"max_dispute_share": -1}, "invalid max_dispute_share"),
        ({"max_dispute_share": True}, "invalid max_dispute_share"),
        ({"ignore_members": [1]}, "invalid ignore_members"),
        ({"lists": "review"}, "invalid lists"),
        ({"lists": ["UPPER"]}, "invalid list name"),
    ],
)
def test_bad_request_values_are_api_errors(body: dict[str, Any], title: str | None) -> None:
    if title is None:
        assert parse_overrides(body).radius is None
        return
    with pytest.raises(ApiError) as refused:
        parse_overrides(body)
    assert refused.value.title == title and refused.value.status == 400


def test_request_values_are_read() -> None:
    overrides = parse_overrides({"radius": {"pdq": 12}, "min_confirmations": 2,
                                 "max_dispute_share": 25, "ignore_members": ["Beta"],
                                 "lists": ["a", "b", "a"]})  # fmt: skip
    assert overrides == Overrides({"pdq": 12}, 2, 25.0, ("Beta",), ("a", "b"))
    assert parse_config(None) == MatchPolicy()


def test_members_are_named_by_name_key_or_identity() -> None:
    members = [{"name": "Beta Org", "identity": OTHER, "keys": (OTHER, THIRD)}]
    assert resolve_members(["beta org"], members, strict=True) == {OTHER}
    assert resolve_members([THIRD.upper()], members, strict=True) == {OTHER}  # a rotated key
    assert resolve_members(["Gamma"], members, strict=False) == frozenset()
    with pytest.raises(ApiError, match="no member is named 'Gamma'"):
        resolve_members(["Gamma"], members, strict=True)
