"""Node configuration: out-of-range settings are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_config
from node.errors import ConfigError


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("interval_s = 0", "must be positive"),
        ("timeout_s = -1", "must be positive"),
        ("fanout = -1", "fanout must be 0 or more"),
        ("relay_asks = -1", "relay_asks must be 0 or more"),
        ("page_records = 0", "page_records must be 1..5000"),
        ("page_records = 5001", "page_records must be 1..5000"),
    ],
)
def test_out_of_range_gossip_settings_are_refused(
    tmp_path: Path, setting: str, message: str
) -> None:
    (tmp_path / "config.toml").write_text(f'name = "n"\n[gossip]\n{setting}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, env={})


def test_fanout_zero_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('name = "n"\n[gossip]\nfanout = 0\n')
    assert load_config(tmp_path, env={}).gossip.fanout == 0


@pytest.mark.parametrize("setting", ["header_timeout_s = 0", "body_timeout_s = -1"])
def test_read_deadlines_must_be_positive(tmp_path: Path, setting: str) -> None:
    (tmp_path / "config.toml").write_text(f'name = "n"\n[limits]\n{setting}\n')
    with pytest.raises(ConfigError, match="must be positive"):
        load_config(tmp_path, env={})


def test_aliases_are_the_other_urls_signed_requests_may_name(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'name = "n"\nurl = "https://node.example/"\n'
        'aliases = ["HTTPS://Proxy.Example:443/hashmesh", "https://node.example/"]\n'
    )
    loaded = load_config(tmp_path, env={})
    assert loaded.aliases == ("https://proxy.example/hashmesh",)  # normalised, url dropped
    assert loaded.answers_to == ("https://node.example/", "https://proxy.example/hashmesh")
    env = {"HASHMESH_ALIASES": "https://a.example:7400/, https://b.example/"}
    assert load_config(tmp_path, env=env).aliases == (
        "https://a.example:7400/",
        "https://b.example/",
    )
    for bad in ('aliases = "https://x.example/"', 'aliases = ["ftp://x.example/"]'):
        config.write_text(f'name = "n"\n{bad}\n')
        with pytest.raises(ConfigError, match=r"aliases|peer URL"):
            load_config(tmp_path, env={})


def test_bulk_tuning_raises_the_collector_thresholds() -> None:
    import gc

    from node.runtime import GC_THRESHOLDS, tune_for_bulk_records

    before = gc.get_threshold()
    try:
        tune_for_bulk_records()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("[media]\nmin_pdq_quality = 101", "min_pdq_quality must be 0..100"),
        ("[media]\nmin_pdq_quality = -1", "min_pdq_quality must be 0..100"),
        ("[media]\nmin_quality = 50", r"unknown key\(s\) in \[media\]: min_quality"),
        ("[limits]\nmax_image_pixels = 0", "max_image_pixels must be >= 1"),
    ],
)
def test_media_settings_are_checked(tmp_path: Path, setting: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(f'name = "n"\n{setting}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, env={})


def test_rendered_config_lists_the_media_settings(tmp_path: Path) -> None:
    from node.config import render_config

    (tmp_path / "config.toml").write_text(render_config("n", "127.0.0.1:7400"))
    config = load_config(tmp_path, env={})
    assert (config.limits.max_image_pixels, config.media.min_pdq_quality) == (40_000_000, 50)
    (tmp_path / "config.toml").write_text(
        'name = "n"\n[limits]\nmax_image_pixels = 1000\n[media]\nmin_pdq_quality = 80\n'
    )
    config = load_config(tmp_path, env={})
    assert (config.limits.max_image_pixels, config.media.min_pdq_quality) == (1000, 80)
