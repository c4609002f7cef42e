"""node.media.matchindex: exact recall against brute force, updates, batches, exact types."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.media.index import DEFAULT_RADII, EXACT_TYPES, HAMMING_BITS, MatchIndex
from node.media.matchindex import Hit

Entries = dict[int, tuple[str, str]]  # key -> (signal type, value)


def random_hex(rng: np.random.Generator, bits: int) -> str:
    return rng.integers(0, 256, bits // 8, dtype=np.uint8).tobytes().hex()


def flip(value: str, positions: np.ndarray, bits: int) -> str:
    number = int(value, 16)
    for position in positions.tolist():
        number ^= 1 << position
    return f"{number:0{bits // 4}x}"


def near(rng: np.random.Generator, value: str, distance: int, bits: int) -> str:
    return flip(value, rng.choice(bits, size=distance, replace=False), bits)


def brute_force(entries: Entries, signal_type: str, value: str, radius: int) -> list[Hit]:
    """The specification: every entry of the type within the radius, by (distance, key)."""
    numbers = [(key, int(v, 16)) for key, (t, v) in entries.items() if t == signal_type]
    return brute_force_numbers(numbers, value, radius)


def brute_force_numbers(numbers: list[tuple[int, int]], value: str, radius: int) -> list[Hit]:
    target = int(value, 16)
    distances = ((key, (number ^ target).bit_count()) for key, number in numbers)
    return sorted(
        (Hit(k, d) for k, d in distances if d <= radius), key=lambda h: (h.distance, h.key)
    )


def planted(
    rng: np.random.Generator, signal_type: str, n_random: int, radius: int, copies: int = 2
) -> tuple[Entries, list[str]]:
    """Random hashes plus, around a few query hashes, ``copies`` near-duplicates at every
    distance 0..radius+1 (the +1 must not match)."""
    bits = HAMMING_BITS[signal_type]
    keys = iter(rng.permutation(10 * (n_random + 200 * copies * (radius + 2))).tolist())
    text = rng.integers(0, 256, (n_random, bits // 8), dtype=np.uint8).tobytes().hex()
    width = bits // 4
    entries = {next(keys): (signal_type, text[i : i + width]) for i in range(0, len(text), width)}
    queries = [random_hex(rng, bits) for _ in range(3)]
    for query in queries:
        for distance in range(radius + 2):
            for _ in range(copies):
                entries[next(keys)] = (signal_type, near(rng, query, distance, bits))
    return entries, queries


def build(entries: Entries, *, bulk_share: float = 1.0, **radii: int) -> MatchIndex:
    """Bulk-load a share of the entries (main segment), ``add`` the rest (delta)."""
    index = MatchIndex(radii or None)
    items = [(key, t, v) for key, (t, v) in entries.items()]
    cut = int(len(items) * bulk_share)
    index.add_many(items[:cut])
    index.compact()
    for item in items[cut:]:
        index.add(*item)
    return index


# --- recall ------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    signal_type=st.sampled_from(["pdq", "phash"]),
    n_random=st.integers(0, 600),
    bulk_share=st.sampled_from([1.0, 0.7, 0.0]),
    extra_radius=st.sampled_from([0, 0, 5, 13]),
    removed_share=st.sampled_from([0.0, 0.1]),
)
def test_recall_equals_brute_force(
    *,
    seed: int,
    signal_type: str,
    n_random: int,
    bulk_share: float,
    extra_radius: int,
    removed_share: float,
) -> None:
    rng = np.random.default_rng(seed)
    radius = DEFAULT_RADII[signal_type]
    entries, queries = planted(rng, signal_type, n_random, radius + extra_radius)
    index = build(entries, bulk_share=bulk_share)
    for key in rng.choice(list(entries), int(len(entries) * removed_share), replace=False):
        index.remove(int(key))
        del entries[int(key)]
    for query in queries:
        for r in (radius, radius + extra_radius):
            expected = brute_force(entries, signal_type, query, r)
            assert index.query(signal_type, query, radius=r) == expected
        got = index.query(signal_type, query)
        assert got == brute_force(entries, signal_type, query, radius)
        assert {h.distance for h in got} <= set(range(radius + 1))


@pytest.mark.parametrize(("signal_type", "n_random"), [("pdq", 60_000), ("phash", 120_000)])
def test_recall_at_larger_sizes(signal_type: str, n_random: int) -> None:
    """Wider substrings and per-table radii of 1 and 2 (the layouts of millions of hashes)."""
    rng = np.random.default_rng(5)
    radius = DEFAULT_RADII[signal_type]
    entries, queries = planted(rng, signal_type, n_random, radius + 6, copies=1)
    index = build(entries)
    numbers = [(key, int(value, 16)) for key, (_, value) in entries.items()]
    for query in queries:
        for r in (0, radius - 3, radius, radius + 6):
            expected = brute_force_numbers(numbers, query, r)
            assert index.query(signal_type, query, radius=r) == expected


@pytest.mark.parametrize(("signal_type", "radius"), [("pdq", 120), ("phash", 40)])
def test_huge_radius_falls_back_to_a_scan(signal_type: str, radius: int) -> None:
    rng = np.random.default_rng(9)
    entries, queries = planted(rng, signal_type, 3_000, 12, copies=1)
    index = build(entries)
    for query in queries:
        expected = brute_force(entries, signal_type, query, radius)
        assert len(expected) > 30
        assert index.query(signal_type, query, radius=radius) == expected


# --- radius ------------------------------------------------------------------------------------


def test_per_call_radius_overrides_the_configured_one() -> None:
    rng = np.random.default_rng(3)
    base = random_hex(rng, 256)
    entries: Entries = {d: ("pdq", near(rng, base, d, 256)) for d in (0, 10, 20, 25, 40, 70)}
    index = build(entries, pdq=20)
    assert [h.distance for h in index.query("pdq", base)] == [0, 10, 20]
    assert [h.distance for h in index.query("pdq", base, radius=40)] == [0, 10, 20, 25, 40]
    assert [h.distance for h in index.query("pdq", base, radius=0)] == [0]
    assert index.query("pdq", base, radius=256)[-1] == Hit(70, 70)


def test_bad_radii_and_types_are_refused() -> None:
    with pytest.raises(ValueError, match="radius"):
        MatchIndex({"pdq": 300})
    with pytest.raises(ValueError, match="radius"):
        MatchIndex({"md5": 1})
    index = MatchIndex()
    with pytest.raises(ValueError, match="radius"):
        index.query("phash", "0" * 16, radius=-1)
    with pytest.raises(ValueError, match="radius"):
        index.query("md5", "0" * 32, radius=3)
    with pytest.raises(ValueError, match="unknown signal type"):
        index.query("tmk", "00")
    with pytest.raises(ValueError, match="unknown signal type"):
        index.add(1, "tmk", "00")
    for bad in ("0" * 63, "g" * 64, "0" * 62 + " 0"):
        with pytest.raises(ValueError, match="hex"):
            index.add(1, "pdq", bad)
        with pytest.raises(ValueError, match="hex"):
            index.add_many([(2, "pdq", "0" * 64), (1, "pdq", bad)])
    assert len(index) == 0


# --- updates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bulk", [True, False])  # key in the main segment or in the delta
def test_add_remove_re_add(bulk: bool) -> None:
    rng = np.random.default_rng(11)
    entries = {key: ("pdq", random_hex(rng, 256)) for key in range(1, 2_001)}
    index = build(entries, bulk_share=1.0 if bulk else 0.0)
    first, second = entries[7][1], near(rng, entries[7][1], 100, 256)
    assert index.query("pdq", first) == [Hit(7, 0)]
    index.remove(7)
    index.remove(7)  # absent: a no-op
    index.remove(123_456)
    assert 7 not in index
    assert len(index) == 1_999
    assert index.query("pdq", first) == []
    index.add(7, "pdq", second)
    assert 7 in index
    assert len(index) == 2_000
    assert index.query("pdq", first) == []
    assert index.query("pdq", second) == [Hit(7, 0)]
    index.add(7, "md5", "a" * 32)  # a key is one signal: re-adding moves it
    assert index.query("pdq", second) == []
    assert index.query("md5", "A" * 32) == [Hit(7, 0)]
    assert len(index) == 2_000
    index.compact()
    assert index.query("md5", "a" * 32) == [Hit(7, 0)]
    assert index.query("pdq", entries[8][1]) == [Hit(8, 0)]


def test_updates_past_the_delta_limit_and_many_removals_stay_exact() -> None:
    rng = np.random.default_rng(13)
    entries, queries = planted(rng, "phash", 3_000, 12)
    items = list(entries.items())
    index = MatchIndex()
    index.add_many([(k, t, v) for k, (t, v) in items[:1_500]])
    for key, (t, v) in items[1_500:]:  # > delta limit: compacts on the way
        index.add(key, t, v)
    for key in list(entries)[::2]:  # > a quarter of the main segment: compacts again
        index.remove(key)
        del entries[key]
    assert len(index) == len(entries)
    for query in queries:
        assert index.query("phash", query) == brute_force(entries, "phash", query, 10)


@pytest.mark.parametrize("signal_type", ["pdq", "phash"])
def test_growing_keys_are_appended_without_a_rebuild_and_stay_exact(signal_type: str) -> None:
    rng = np.random.default_rng(29)
    radius = DEFAULT_RADII[signal_type]
    entries, queries = planted(rng, signal_type, 4_000, radius)
    ordered = sorted(entries.items())
    index = MatchIndex()
    index.add_many([(k, t, v) for k, (t, v) in ordered[: len(ordered) // 2]])
    laid_out = index._by_type[signal_type]._index.laid_out_for  # white box: no rebuild below
    for number, (key, (t, v)) in enumerate(ordered[len(ordered) // 2 :]):
        index.add(key, t, v)  # growing keys: the delta is appended twice on the way
        if number % 7 == 0:
            index.remove(ordered[number][0])  # tombstones survive appends
            del entries[ordered[number][0]]
    assert index._by_type[signal_type]._index.laid_out_for == laid_out
    assert len(index) == len(entries)
    fresh = build(entries)
    for query in queries:
        expected = brute_force(entries, signal_type, query, radius + 3)
        assert index.query(signal_type, query, radius=radius + 3) == expected
        assert fresh.query(signal_type, query, radius=radius + 3) == expected


@pytest.mark.parametrize("signal_type", ["pdq", "phash"])
def test_the_middle_segment_takes_deltas_and_folds_into_the_main_one_exactly(
    signal_type: str,
) -> None:
    """Deltas go to a middle segment of at most an eighth of the main one, which is folded
    into the main one when it would pass that; removals and re-adds in every tier, with
    growing and with earlier keys, stay exact."""
    rng = np.random.default_rng(31)
    radius, bits = DEFAULT_RADII[signal_type], HAMMING_BITS[signal_type]
    entries, queries = planted(rng, signal_type, 24_000, radius)
    ordered = sorted(entries.items())
    indexed = dict(ordered[:16_000])  # what the index holds, step by step
    index = MatchIndex()
    index.add_many([(k, t, v) for k, (t, v) in indexed.items()])
    tiers = index._by_type[signal_type]._index  # white box: which tier holds what
    main_sizes, checked_mid = {tiers.main.n}, False
    removed: list[int] = []
    for number, (key, (t, v)) in enumerate(ordered[16_000:]):
        index.add(key, t, v)
        indexed[key] = (t, v)
        main_sizes.add(tiers.main.n)
        if number % 9 == 0:  # from the main segment, the middle one or the delta in turn
            gone = ordered[(number * 7) % (16_000 + number)][0]
            if gone in indexed:
                index.remove(gone)
                del indexed[gone]
                removed.append(gone)
        if number % 50 == 0 and removed:  # an earlier key comes back, near a query
            back = removed.pop()
            indexed[back] = (signal_type, near(rng, queries[0], number % (radius + 1), bits))
            index.add(back, *indexed[back])
        assert tiers.mid.live <= tiers.main.n // 8
        if number % 400 == 0 and tiers.mid.n:  # answers come from all three tiers
            if not checked_mid:  # a batch replaces keys the middle segment holds
                held = tiers.mid.rows()[0][:20].tolist()
                moved = [(k, signal_type, near(rng, queries[1], 1, bits)) for k in held]
                index.add_many(moved)
                indexed.update({k: (t, v) for k, t, v in moved})
                assert len(index) == len(indexed)
            for query in queries[:2]:
                expected = brute_force(indexed, signal_type, query, radius)
                assert index.query(signal_type, query) == expected
            checked_mid = True
    assert len(main_sizes) > 1 and checked_mid  # both paths ran
    assert len(index) == len(indexed)
    for query in queries:
        expected = brute_force(indexed, signal_type, query, radius + 2)
        assert index.query(signal_type, query, radius=radius + 2) == expected
    index.compact()
    assert tiers.mid.n == 0 and tiers.delta.n == 0 and len(index) == len(indexed)
    for query in queries:
        assert index.query(signal_type, query) == brute_force(indexed, signal_type, query, radius)


def test_add_many_is_add_in_order() -> None:
    rng = np.random.default_rng(17)
    a, b, c = (random_hex(rng, 64) for _ in range(3))
    index = MatchIndex()
    index.add(1, "phash", a)
    index.add_many([(1, "phash", b), (2, "dhash", a), (2, "phash", c), (3, "url", "https://x/")])
    assert index.query("phash", a) == []
    assert index.query("phash", b) == [Hit(1, 0)]
    assert index.query("phash", c) == [Hit(2, 0)]
    assert index.query("dhash", a) == []
    assert index.query("url", "https://x/") == [Hit(3, 0)]
    assert len(index) == 3
    index.add_many(iter([(4, "phash", a), (1, "sha1", "b" * 40)]))
    assert index.query("phash", b) == []
    assert index.query("phash", a) == [Hit(4, 0)]
    assert len(index) == 4


def test_re_adding_a_key_below_the_largest_moves_it() -> None:
    """Keys above every key ever indexed skip the lookup of an old entry; any other key, after
    add or add_many, still replaces what it held."""
    rng = np.random.default_rng(19)
    a, b = random_hex(rng, 256), random_hex(rng, 256)
    index = MatchIndex()
    index.add_many([(k, "sha256", f"{k:064x}") for k in range(1, 11)])
    index.add(5, "pdq", a)  # below the largest key: the sha256 entry must go
    assert index.query("sha256", f"{5:064x}") == [] and len(index) == 10
    index.add(11, "pdq", b)
    index.add(11, "md5", "c" * 32)  # the largest key itself, again
    assert index.query("pdq", b) == [] and index.query("md5", "c" * 32) == [Hit(11, 0)]
    index.remove(11)
    index.add(11, "pdq", a)  # removed and re-added
    assert index.query("pdq", a) == [Hit(5, 0), Hit(11, 0)] and len(index) == 11


# --- batches and exact types -------------------------------------------------------------------


@pytest.mark.parametrize("signal_type", ["pdq", "dhash"])
def test_batch_equals_single(signal_type: str) -> None:
    rng = np.random.default_rng(19)
    entries, queries = planted(rng, signal_type, 5_000, DEFAULT_RADII[signal_type])
    index = build(entries, bulk_share=0.9)
    bits = HAMMING_BITS[signal_type]
    values = (
        queries
        + [random_hex(rng, bits) for _ in range(300)]
        + [entries[k][1] for k in entries][:100]
    )
    batch = index.query_batch(signal_type, values)
    assert batch == [index.query(signal_type, v) for v in values]
    assert batch[0] == brute_force(entries, signal_type, values[0], DEFAULT_RADII[signal_type])
    assert index.query_batch(signal_type, []) == []


def test_exact_types() -> None:
    index = MatchIndex()
    digest = {
        "md5": "d41d8cd98f00b204e9800998ecf8427e",
        "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    }
    digest["sha256"] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    index.add(5, "md5", digest["md5"])
    index.add(3, "md5", digest["md5"].upper())
    index.add(9, "sha1", digest["sha1"])
    index.add(4, "sha256", digest["sha256"])
    index.add(8, "url", "https://example.org/a?b=1")
    assert index.query("md5", digest["md5"]) == [Hit(3, 0), Hit(5, 0)]
    assert index.query("sha1", digest["sha1"]) == [Hit(9, 0)]
    assert index.query("sha256", digest["sha256"].upper()) == [Hit(4, 0)]
    assert index.query("sha1", digest["md5"] + "00000000") == []
    assert index.query("url", "https://example.org/a?b=1") == [Hit(8, 0)]
    assert index.query("url", "https://EXAMPLE.org/a?b=1") == []  # urls arrive canonical
    assert index.query_batch("md5", [digest["md5"], "0" * 32]) == [[Hit(3, 0), Hit(5, 0)], []]
    index.remove(5)
    assert index.query("md5", digest["md5"]) == [Hit(3, 0)]
    assert 5 not in index
    assert 3 in index
    assert len(index) == 4
    for signal_type in EXACT_TYPES[:3]:
        with pytest.raises(ValueError, match="hex"):
            index.add(1, signal_type, "xyz")
    with pytest.raises(ValueError, match="url"):
        index.add(1, "url", "")


def test_memory_is_reported() -> None:
    rng = np.random.default_rng(23)
    empty = MatchIndex().memory_bytes()
    entries = {key: ("pdq", random_hex(rng, 256)) for key in range(20_000)}
    index = build(entries)
    assert empty < index.memory_bytes() < empty + 20_000 * 400
    assert len(index) == 20_000
    assert 19_999 in index
    assert "19999" not in index
