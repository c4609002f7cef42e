"""The web UI in a real headless Chromium against real node processes on loopback.

Two ``hashmesh serve`` processes (members a and b, plain HTTP on 127.0.0.1) with web UI
accounts: on a, moderator mia and viewer vic; on b, moderator bob. a lists a picture's PDQ
hash through its local API and b's member confirms it with a note through b's. Chromium
(Debian's ``chromium``, driven by Playwright's Python API with ``executable_path``; never
``playwright install``) then does what a moderator does, step after step in one test (one
set of node processes and one browser, so that no xdist worker starts a second).

Skipped, saying why, when ``/usr/bin/chromium`` is absent (``.ci/run`` installs it). With
``HASHMESH_SCREENSHOTS=DIR`` the run also saves the README's screenshots there
(``scripts/screenshots.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, wait_until
from images import encode
from uiapp import FAST_HASHER, PASSWORD, add_users, edited, picture

from node.cli.common import home_db
from node.media.hashing import hash_image
from node.store import users

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SHOTS = os.environ.get("HASHMESH_SCREENSHOTS")

if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's chromium at /usr/bin/chromium "
        "(apt-get install -y chromium; .ci/run installs it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")

pytestmark = pytest.mark.slow
NOTE = "seen on our platform too: the attack video, reposted"


@dataclass
class World:
    a: NodeProc
    b: NodeProc
    browser: Any
    signal: str  # a's PDQ signal
    pdq: str
    md5: str  # a's MD5 signal of another file

    def page(self, node: NodeProc, user: str) -> Any:
        """A fresh browser context (its own cookies) signed in as user on node's UI."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(ui(node, "/ui/signals"))  # sent to the login page first
        assert "/ui/login" in page.url
        page.fill("#name", user)
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(re.compile(r".*/ui/signals$"))
        return page


def ui(node: NodeProc, path: str) -> str:
    return f"http://127.0.0.1:{node.local_port}{path}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("browser")
    _, (a, b) = found_federation(root, ["a", "b"])
    add_users(a.home, ("mia", "moderator"), ("vic", "viewer"))
    add_users(b.home, ("bob", "moderator"))
    for node in (a, b):
        node.start()
    try:
        pdq = hash_image(encode(picture(1), "PNG")).pdq
        listed = a.api("POST", "/v1/signals", {"type": "pdq", "value": pdq,
                                               "labels": ["entity:example"],
                                               "note": "from a's review queue"})  # fmt: skip
        md5 = "9e107d9d372bb6826bd81d3542a419d6"
        a.api("POST", "/v1/signals", {"type": "md5", "value": md5, "labels": ["incident:demo"]})
        wait_until(lambda: _has(b, listed["id"]))
        b.api("POST", f"/v1/signals/{listed['id']}/opinions", {"verdict": "confirm", "note": NOTE})
        wait_until(lambda: a.api("GET", f"/v1/signals/{listed['id']}")["tallies"]["confirm"] == 1)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
            )
            try:
                yield World(a, b, browser, listed["id"], pdq, md5)
            finally:
                browser.close()
    finally:
        for node in (a, b):
            node.stop()


def _has(node: NodeProc, signal_id: str) -> bool:
    import urllib.error

    try:
        node.api("GET", f"/v1/signals/{signal_id}")
    except urllib.error.HTTPError:
        return False
    return True


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"), full_page=False)


def step_find_a_signal_by_label_and_hash_and_read_another_members_note(world: World) -> None:
    page = world.page(world.a, "mia")
    page.goto(ui(world.a, "/ui/"))
    page.wait_for_selector("text=Dashboard")
    shot(page, "dashboard")
    page.goto(ui(world.a, "/ui/signals"))
    page.fill("#label", "entity:example")
    page.click("button:has-text('Filter')")
    page.wait_for_url(re.compile(r".*label=entity%3Aexample.*"))
    rows = page.locator("table.signals tbody tr")
    assert rows.count() == 1
    rows.first.locator("a").click()
    page.wait_for_url(re.compile(rf".*/ui/signals/{world.signal}$"))
    assert NOTE in page.inner_text("ol.timeline")  # b's member wrote it, on b's node
    assert "confirm 1" in page.inner_text("p.status")
    shot(page, "signal")
    # by hash: the md5 value, typed in the search box
    page.goto(ui(world.a, "/ui/signals"))
    page.fill("#q", world.md5)
    page.keyboard.press("Enter")
    page.wait_for_selector("table.signals")
    assert "incident:demo" in page.inner_text("table.signals")
    page.context.close()


def step_an_edited_image_matches_with_its_provenance(world: World) -> None:
    page = world.page(world.a, "vic")  # matching needs no more than a viewer
    page.goto(ui(world.a, "/ui/match"))
    image = encode(edited(picture(1)), "JPEG", quality=85)
    page.set_input_files("#file", files=[{"name": "edited.jpg", "mimeType": "image/jpeg",
                                          "buffer": image}])  # fmt: skip
    page.click("button:has-text('Hash and match')")
    page.wait_for_selector("#answer")
    answer = page.inner_text("#answer")
    assert "Match found" in answer and "edited.jpg" in answer
    hit = page.locator("table.hits tbody tr").first.inner_text()
    assert "entity:example" in hit and "a" in hit.split("\t")  # label and contributor
    assert page.locator("#answer img").count() == 0  # the upload is never shown
    shot(page, "match")
    page.context.close()


def step_a_dispute_shows_on_the_second_nodes_ui(world: World) -> None:
    """b's moderator disputes a's signal (b had confirmed it: the dispute replaces that);
    a's UI shows the tally change and the note. (A member's opinion on its own signal is
    refused: it would not count.)"""
    page = world.page(world.b, "bob")
    page.goto(ui(world.b, f"/ui/signals/{world.signal}"))
    page.check("input[name=verdict][value=dispute]")
    page.fill("#op-note", "not extremist: a news report about the attack")
    page.click("form[action$='/opinion'] button")
    page.wait_for_selector("#confirm")
    assert "dispute" in page.inner_text("table.confirm")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*done=dispute$"))
    assert "dispute 1" in page.inner_text("p.status")
    page.context.close()
    other = world.page(world.a, "mia")
    other.goto(ui(world.a, f"/ui/signals/{world.signal}"))

    def disputed_on_a() -> bool:
        other.reload()
        return "dispute 1" in other.inner_text("p.status")

    wait_until(disputed_on_a, timeout=20, step=0.3)
    assert "news report about the attack" in other.inner_text("ol.timeline")
    other.context.close()


def step_a_viewer_cannot_dispute(world: World) -> None:
    page = world.page(world.a, "vic")
    page.goto(ui(world.a, f"/ui/signals/{world.signal}"))
    assert page.locator("form[action$='/opinion']").count() == 0
    token = page.get_attribute("form.logout input[name=csrf_token]", "value")
    answer = page.request.post(
        ui(world.a, f"/ui/signals/{world.signal}/opinion"),
        form={"csrf_token": token or "", "verdict": "dispute", "confirm": "yes"},
    )
    assert answer.status == 403 and "needs the moderator role" in answer.text()
    page.context.close()


def step_a_request_without_the_csrf_token_is_refused(world: World) -> None:
    page = world.page(world.a, "mia")
    before = world.a.api("GET", f"/v1/signals/{world.signal}")["tallies"]
    answer = page.request.post(
        ui(world.a, f"/ui/signals/{world.signal}/opinion"),
        form={"verdict": "confirm", "note": "forged", "confirm": "yes"},
    )
    assert answer.status == 403 and "CSRF token" in answer.text()
    assert world.a.api("GET", f"/v1/signals/{world.signal}")["tallies"] == before
    page.context.close()


def step_after_logout_the_page_shows_nothing(world: World) -> None:
    page = world.page(world.a, "mia")
    page.goto(ui(world.a, f"/ui/signals/{world.signal}"))
    assert world.pdq in page.content()
    page.click("form.logout button")
    page.wait_for_selector("text=You are signed out")
    page.go_back()  # no-store: the browser asks again, and is sent to sign in
    page.wait_for_load_state()
    assert "/ui/login" in page.url and world.pdq not in page.content()
    page.goto(ui(world.a, f"/ui/signals/{world.signal}"))
    assert "/ui/login" in page.url and world.pdq not in page.content()
    assert NOTE not in page.content()
    page.context.close()


def step_a_user_added_while_the_node_runs_signs_in_and_removal_ends_the_session(
    world: World,
) -> None:
    """What ``hashmesh user add|remove`` do (``node.cli.common.home_db``), from this process while
    the node process runs and writes the same database."""
    with home_db(world.a.home) as conn:
        users.add_user(conn, "newbie", "viewer", PASSWORD, now_ms=1, hasher=FAST_HASHER)
    page = world.page(world.a, "newbie")
    page.goto(ui(world.a, f"/ui/signals/{world.signal}"))
    assert world.pdq in page.content()
    with home_db(world.a.home) as conn:
        users.remove_user(conn, "newbie")
    page.reload()
    assert "/ui/login" in page.url and world.pdq not in page.content()
    page.context.close()


def test_a_moderators_session_in_chromium_across_two_nodes(world: World) -> None:
    """One browser session after another (one module fixture: two nodes and a Chromium)."""
    step_find_a_signal_by_label_and_hash_and_read_another_members_note(world)
    step_an_edited_image_matches_with_its_provenance(world)
    step_a_dispute_shows_on_the_second_nodes_ui(world)
    step_a_viewer_cannot_dispute(world)
    step_a_request_without_the_csrf_token_is_refused(world)
    step_after_logout_the_page_shows_nothing(world)
    step_a_user_added_while_the_node_runs_signs_in_and_removal_ends_the_session(world)
