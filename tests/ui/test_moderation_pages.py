"""The match log in the web UI (node.ui.moderation): matches from the UI logged as their
user's, a signal's count on its page, a quarantine on the dashboard released through a
confirmation, and a dead webhook delivery retried -- against a real node app on loopback."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import found_federation, free_port
from uiapp import Browser, UiNode, add_users

from node.home import NodeHome
from node.store.store import Store
from protocol.bodies import SignalBody

VALUE = hashlib.sha256(b"the ui's signal").hexdigest()
MODERATION = f"""
[moderation]
flush_interval_s = 0.05
flood_floor = 5
webhook_max_attempts = 1
[[webhooks]]
name = "nowhere"
url = "http://127.0.0.1:{free_port()}/closed"
secret = "0123456789abcdef-ui"
"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UiNode, str]]:
    _, nodes = found_federation(tmp_path_factory.mktemp("matchlog"), ["a", "b"])
    home = nodes[0].home
    with (home / "config.toml").open("a") as f:
        f.write(MODERATION)
    node_home = NodeHome(home)
    with Store.open(node_home.db_path, node_home.federation(), create=True) as store:
        signal = store.append_local(node_home.key(), SignalBody("pdq", VALUE, ("entity:x",)),
                                    ts=1_700_000_000_000)  # fmt: skip
    add_users(home, ("vic", "viewer"), ("mia", "moderator"))
    served = UiNode(home)
    yield served, signal.id
    served.close()


def until(ui: UiNode, condition: Any, timeout: float = 10.0) -> Any:
    """Let the node's loop run (its flusher and sender) until condition() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ui.run(_sleep())
        if found := condition():
            return found
    raise AssertionError("condition not met")


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def confirm(browser: Browser, path: str, fields: dict[str, str]) -> str:
    first = browser.post(path, {"csrf_token": browser.csrf(), **fields})
    assert first.status == 200 and 'id="confirm"' in first.text, first.text[:500]
    done = browser.post(path, {"csrf_token": browser.csrf(), **fields, "confirm": "yes"})
    assert done.status == 200, done.text[:500]
    return done.text


def test_a_ui_match_is_logged_as_its_user_and_counted_on_the_signal_page(
    ui: tuple[UiNode, str],
) -> None:
    served, sid = ui
    mia = served.browser("mia")
    page = mia.post("/ui/match", {"csrf_token": mia.csrf(), "hashes": f"pdq:{VALUE}"})
    assert page.status == 200 and sid in page.text
    log = until(served, lambda: (p := mia.get("/ui/matchlog").text) and "ui:mia" in p and p)
    assert sid[:12] in log and "Match log" in log
    signal_page = mia.get(f"/ui/signals/{sid}").text
    assert 'id="matched-here">1 times' in signal_page
    mia.close()


def test_a_quarantine_shows_on_the_dashboard_and_a_moderator_releases_it(
    ui: tuple[UiNode, str],
) -> None:
    served, sid = ui
    status, answer = served.api("POST", "/v1/match",
                                json={"hashes": [{"type": "pdq", "value": VALUE}] * 6})  # fmt: skip
    assert status == 200 and answer["matched"]
    vic, mia = served.browser("vic"), served.browser("mia")
    dashboard = until(served, lambda: (p := vic.get("/ui/").text) and "Quarantined signals: 1"
                      in p and p)  # fmt: skip
    assert sid[:16] in dashboard
    assert "Release…" not in vic.get("/ui/matchlog").text  # a viewer cannot release
    assert "quarantined" in vic.get(f"/ui/signals/{sid}").text
    done = confirm(mia, f"/ui/matchlog/release/{sid}", {"held": "drop"})
    assert "Done: released" in done and "Quarantined signals" not in done
    assert served.node.moderation is not None and served.node.moderation.quarantined == set()
    assert "release quarantine" in mia.get("/ui/log").text
    vic.close()
    mia.close()


def test_a_dead_delivery_is_listed_and_retried(ui: tuple[UiNode, str]) -> None:
    served, _ = ui
    served.api("POST", "/v1/match", json={"hashes": [{"type": "pdq", "value": VALUE}]})
    dead = until(served, lambda: served.api("GET", "/v1/webhooks/deliveries?state=dead")[1][
        "deliveries"])  # fmt: skip
    uid = dead[0]["id"]
    mia = served.browser("mia")
    assert uid in mia.get("/ui/matchlog").text
    done = confirm(mia, f"/ui/webhooks/{uid}/retry", {})
    assert "Done: retried" in done
    again = served.api("GET", f"/v1/webhooks/deliveries/{uid}")[1]
    assert again["attempts"] in (0, 1) and again["state"] in ("pending", "dead")
    assert "retry webhook" in mia.get("/ui/log").text
    refused = mia.post(f"/ui/webhooks/{'0' * 32}/retry", {"csrf_token": mia.csrf()})
    assert refused.status == 404
    mia.close()
