"""The web UI through aiohttp's client against a real node app on loopback.

Two apps for the module: node ``a`` of an empty federation, and node ``a`` of a small one
(members a, b, c: signals, a retraction, an expiry, b's note on a's signal, a's dispute of b's
signal, c forked). People sign in through the login form with accounts of every role.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import found_federation
from images import encode
from uiapp import PASSWORD, Browser, Story, UiNode, add_users, edited, fill_store, picture

from node.ui.queries import PAGE_ROWS

PAGES = (
    "/ui/",
    "/ui/signals",
    "/ui/match",
    "/ui/members",
    "/ui/audit",
    "/ui/report",
    "/ui/log",
    "/ui/act",
)
ROLES = (("vic", "viewer"), ("mia", "moderator"), ("ada", "admin"))


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiNode]:
    _, nodes = found_federation(tmp_path_factory.mktemp("empty"), ["a", "b"])
    add_users(nodes[0].home, *ROLES, ("lou", "viewer"))  # lou is locked out by a test
    ui = UiNode(nodes[0].home)
    yield ui
    ui.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UiNode, Story]]:
    _, nodes = found_federation(tmp_path_factory.mktemp("small"), ["a", "b", "c"])
    story = fill_store([n.home for n in nodes], extra_signals=PAGE_ROWS + 5)
    add_users(nodes[0].home, *ROLES)
    ui = UiNode(nodes[0].home)
    yield ui, story
    ui.close()


@pytest.fixture
def mia(small: tuple[UiNode, Story]) -> Iterator[Browser]:
    browser = small[0].browser("mia")
    yield browser
    browser.close()


def hidden_fields(page: str) -> list[tuple[str, str]]:
    """A form's hidden fields, as a browser sends them back (entities decoded)."""
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)
    return [(name, html.unescape(value)) for name, value in found]


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


# -- every page renders ----------------------------------------------------------------------


def test_every_page_renders_with_an_empty_store(empty: UiNode) -> None:
    browser = empty.browser("ada")
    for path in (*PAGES, "/ui/signals?status=disputed", "/ui/signals?label=entity:x"):
        page = browser.get(path)
        assert page.status == 200, (path, page.text[:300])
        assert "Sign out" in page.text and "<main" in page.text
    assert "No signals" in browser.get("/ui/signals").text
    assert "test federation" in browser.get("/ui/").text
    browser.close()


def test_every_page_renders_with_a_small_store(small: tuple[UiNode, Story]) -> None:
    ui, story = small
    browser = ui.browser("vic")
    for path in (
        *PAGES[:-1],
        f"/ui/signals/{story.pdq}",
        f"/ui/records/{story.pdq}",
        *(
            f"/ui/signals?status={s}"
            for s in ("active", "retracted", "expired", "disputed", "frozen")
        ),
    ):
        page = browser.get(path)
        assert page.status == 200, (path, page.text[:300])
    browser.close()


def test_the_dashboard_shows_the_federation_counts_and_a_fork_loudly(
    small: tuple[UiNode, Story],
) -> None:
    ui, _ = small
    browser = ui.browser("vic")
    page = text_of(browser.get("/ui/").text)
    fed = ui.node.federation
    assert fed.name in page and fed.id in page and ui.node.key.public in page
    assert "Frozen members: 1" in page and "FORK" in page and "c (" in page
    stats = ui.run(ui.node.store.read(lambda s: s.stats(now_ms=0)))
    assert f"records {stats['records']:,}" in page  # thousands separators
    assert "records merged" in page and "match requests" in page
    browser.close()


def test_signals_filter_by_status_label_member_and_type(small: tuple[UiNode, Story]) -> None:
    ui, story = small
    browser = ui.browser("vic")

    def ids(query: str) -> set[str]:
        page = browser.get(f"/ui/signals?{query}")
        assert page.status == 200, page.text[:300]
        return set(re.findall(r'href="/ui/signals/([0-9a-f]{64})"', page.text))

    # other tests add signals to this store: check what each filter must and must not show
    everyone = {story.pdq, story.retracted, story.expired, story.disputed, story.frozen}
    for query, wanted in [
        ("status=retracted", story.retracted),
        ("status=expired", story.expired),
        ("status=disputed", story.disputed),
        ("status=frozen", story.frozen),
        ("label=entity:example", story.pdq),
        ("type=pdq", story.pdq),
    ]:
        found = ids(query)
        assert wanted in found and not (everyone - {wanted}) & found, query
    b = next(m.identity for m in ui.node.membership.members.values() if m.name == "b")  # type: ignore[union-attr]
    assert ids(f"member={b}") == {story.disputed}
    browser.close()


def test_signals_page_server_side_newest_first(small: tuple[UiNode, Story]) -> None:
    ui, _ = small
    browser = ui.browser("vic")
    first = browser.get("/ui/signals?label=incident:bulk")
    rows = re.findall(r'href="/ui/signals/([0-9a-f]{64})"', first.text)
    assert len(rows) == PAGE_ROWS
    more = re.search(r'href="(/ui/signals\?[^"]+)" rel="next"', first.text)
    assert more is not None
    second = browser.get(more[1].replace("&amp;", "&"))
    rest = re.findall(r'href="/ui/signals/([0-9a-f]{64})"', second.text)
    assert len(rest) == 5 and not set(rest) & set(rows)
    assert 'rel="next"' not in second.text
    browser.close()


def test_search_by_hash_value_and_by_id(small: tuple[UiNode, Story]) -> None:
    ui, story = small
    browser = ui.browser("vic")
    page = browser.get(f"/ui/signals?q=pdq:{story.pdq_value}")
    assert f"/ui/signals/{story.pdq}" in page.text
    retracted = browser.get(f"/ui/signals?q={ui.run(_value(ui, story.retracted))}")
    assert f"/ui/signals/{story.retracted}" in retracted.text  # any status is found
    by_id = browser.get(f"/ui/signals?q={story.pdq}", allow_redirects=False)
    assert by_id.status == 303 and by_id.headers["Location"] == f"/ui/signals/{story.pdq}"
    assert browser.get("/ui/signals?q=not-a-hash").status == 400
    browser.close()


async def _value(ui: UiNode, signal_id: str) -> str:
    row = await ui.node.store.read(lambda s: s.signal(signal_id, now_ms=0))
    assert row is not None
    return str(row["value"])


def test_the_signal_page_tells_the_whole_story(small: tuple[UiNode, Story]) -> None:
    ui, story = small
    browser = ui.browser("vic")
    page = text_of(browser.get(f"/ui/signals/{story.pdq}").text)
    assert story.pdq_value in page and "entity:example" in page and "from a's review" in page
    assert story.noted in page and "confirm" in page  # b's opinion, with its note
    assert "2023-11-14T" in page  # ISO 8601 with the zone
    retracted = text_of(browser.get(f"/ui/signals/{story.retracted}").text)
    assert "Retracted" in retracted and "listed in error" in retracted
    disputed = text_of(browser.get(f"/ui/signals/{story.disputed}").text)
    assert "dispute 1" in disputed and "satire, not extremist" in disputed
    verify = text_of(browser.get(f"/ui/records/{story.pdq}").text)
    assert "Signature verified" in verify and story.pdq in verify
    assert browser.get("/ui/signals/" + "ab" * 32).status == 404
    browser.close()


# -- forms -----------------------------------------------------------------------------------

BAD_FORMS = [
    ("/ui/act/add", {"type": "md5", "value": "xyz"}, "invalid hash"),
    ("/ui/act/add", {"type": "nope", "value": "ab"}, "give a signal type"),
    ("/ui/act/add", {"type": "pdq", "value": "0" * 64}, "featureless"),
    (
        "/ui/act/add",
        {"type": "md5", "value": "d35c785545392755e7e4164457657269", "labels": "not-in-taxonomy"},
        "taxonomy",
    ),
    (
        "/ui/act/add",
        {"type": "md5", "value": "d35c785545392755e7e4164457657269", "expires_days": "soon"},
        "expires",
    ),
    ("/ui/act/add", {"confirm": "yes"}, "give a hash"),
    ("/ui/signals/{pdq}/opinion", {"verdict": "love"}, "choose a verdict"),
    ("/ui/signals/{pdq}/opinion", {"verdict": "dispute", "note": "x" * 5000}, "note"),
    ("/ui/signals/{pdq}/opinion", {"verdict": "dispute", "labels": "Bad Label!"}, "label"),
    ("/ui/signals/{disputed}/retract", {"reason": "not ours"}, "only the member"),
    ("/ui/signals/{pdq}/retract", {"reason": "x" * 5000, "confirm": "yes"}, "reason"),
    ("/ui/members/vote", {"action": "admit", "card": "{not json"}, "not JSON"),
    ("/ui/members/vote", {"action": "admit", "key": "zz", "name": "n"}, "member"),
    ("/ui/members/vote", {"action": "remove", "member": "ab" * 32}, "current member"),
    ("/ui/members/vote", {"action": "elect"}, "admit or remove"),
    ("/ui/match", {"hashes": ""}, "paste at least one hash"),
    ("/ui/match", {"hashes": "zzz"}, "not a hash of any type"),
]


@pytest.mark.parametrize(("path", "data", "words"), BAD_FORMS)
def test_every_form_refuses_bad_input_with_a_message_and_changes_nothing(
    small: tuple[UiNode, Story], path: str, data: dict[str, str], words: str
) -> None:
    ui, story = small
    browser = ui.browser("ada")
    before = (ui.records(), ui.actions())
    page = browser.post(
        path.format(pdq=story.pdq, disputed=story.disputed), data | {"csrf_token": browser.csrf()}
    )
    assert page.status == 400, page.text[:500]
    error = re.search(r'<p class="error" role="alert" id="error">([^<]+)</p>', page.text)
    assert error is not None and words in error[1], page.text[:800]
    assert (ui.records(), ui.actions()) == before
    browser.close()


def test_an_upload_that_is_not_an_image_is_refused_on_the_page(
    small: tuple[UiNode, Story], mia: Browser
) -> None:
    ui, _ = small
    before = ui.records()
    for path in ("/ui/act/upload", "/ui/match/upload"):
        form = _multipart("file", "notes.txt", b"not a picture")
        page = mia.post(f"{path}?csrf_token={mia.csrf()}", form)
        assert page.status in (200, 400), page.text[:300]
        assert "Could not hash it" in page.text or "cannot hash" in page.text, page.text[:600]
    assert ui.records() == before


def _multipart(name: str, filename: str, data: bytes) -> object:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field(name, data, filename=filename, content_type="application/octet-stream")
    return form


def test_a_moderator_adds_disputes_and_retracts_through_confirmations(
    small: tuple[UiNode, Story], mia: Browser
) -> None:
    ui, story = small
    value = "0123456789abcdef0123456789abcdef"
    before = ui.records()
    confirm = mia.post(
        "/ui/act/add",
        {
            "csrf_token": mia.csrf(),
            "type": "md5",
            "value": value,
            "labels": "incident:test",
            "note": "from the ui <b>bold</b>",
        },
    )
    assert confirm.status == 200 and "Sign and publish" in confirm.text
    assert ui.records() == before  # nothing is signed before the confirmation
    fields = dict(hidden_fields(confirm.text))
    done = mia.post("/ui/act/add", fields, allow_redirects=False)
    assert done.status == 303, done.text[:300]
    new_id = done.headers["Location"].split("/")[-1].split("?")[0]
    assert ui.records() == before + 1
    api_status, signal = ui.api("GET", f"/v1/signals/{new_id}")
    assert api_status == 200 and signal["labels"] == ["incident:test"]
    shown = mia.get(f"/ui/signals/{new_id}").text  # autoescaped: markup is shown, not run
    assert "from the ui &lt;b&gt;bold&lt;/b&gt;" in shown and "<b>bold" not in shown
    # an opinion with a note on b's signal (not on a's own: that would not count)
    step = mia.post(
        f"/ui/signals/{story.disputed}/opinion",
        {"csrf_token": mia.csrf(), "verdict": "seen", "note": "checked by mia"},
    )
    fields = dict(hidden_fields(step.text))
    page = mia.post(f"/ui/signals/{story.disputed}/opinion", fields)
    assert (
        page.status == 200 and "checked by mia" in page.text and "signed here by mia" in page.text
    )
    # retract our own new signal
    step = mia.post(f"/ui/signals/{new_id}/retract", {"csrf_token": mia.csrf(), "reason": "test"})
    fields = dict(hidden_fields(step.text))
    assert "retracted" in text_of(mia.post(f"/ui/signals/{new_id}/retract", fields).text)
    log = text_of(mia.get("/ui/log").text)
    assert "mia add" in log and "mia seen" in log and "mia retract" in log


def test_a_moderator_adds_an_images_hashes(small: tuple[UiNode, Story], mia: Browser) -> None:
    ui, _ = small
    before = ui.records()
    form = _multipart("file", "new.png", encode(picture(7), "PNG"))
    form.add_field("labels", "entity:example")  # type: ignore[attr-defined]
    form.add_field("note", "from an upload")  # type: ignore[attr-defined]
    step = mia.post(f"/ui/act/upload?csrf_token={mia.csrf()}", form)
    assert step.status == 200 and "Sign and publish" in step.text, step.text[:500]
    assert ui.records() == before and "new.png" in step.text
    fields = hidden_fields(step.text)
    assert sorted(v.split(":")[0] for k, v in fields if k == "hash") == ["md5", "pdq"]
    page = mia.post("/ui/act/add", fields)
    assert page.status == 200 and "from an upload" in page.text
    assert ui.records() == before + 2


def test_an_admin_votes_and_sees_the_pending_tally(small: tuple[UiNode, Story]) -> None:
    ui, _ = small
    ada = ui.browser("ada")
    newcomer = "cd" * 32
    step = ada.post(
        "/ui/members/vote",
        {
            "csrf_token": ada.csrf(),
            "action": "admit",
            "card": f'{{"name": "dora", "key": "{newcomer}", "role": "member"}}',
        },
    )
    assert step.status == 200 and "Sign and publish" in step.text
    fields = dict(hidden_fields(step.text))
    page = text_of(ada.post("/ui/members/vote", fields).text)
    assert "dora" in page and "1 of 2" in page
    ada.close()


def test_the_ui_and_the_api_match_alike(small: tuple[UiNode, Story], mia: Browser) -> None:
    ui, story = small
    query = f"pdq:{story.pdq_value}"
    page = mia.post("/ui/match", {"csrf_token": mia.csrf(), "hashes": query})
    status, answer = ui.api(
        "POST", "/v1/match", json={"hashes": [{"type": "pdq", "value": story.pdq_value}]}
    )
    assert status == 200 and answer["matched"]
    api_ids = {h["id"] for r in answer["results"] for h in r["hits"]}
    ui_ids = set(re.findall(r'href="/ui/signals/([0-9a-f]{64})"', page.text))
    assert ui_ids == api_ids == {story.pdq}
    image = encode(edited(picture(1)), "PNG")
    upload = mia.post(
        f"/ui/match/upload?csrf_token={mia.csrf()}", _multipart("file", "edited.png", image)
    )
    assert "Match found" in upload.text and story.pdq in upload.text
    assert "entity:example" in upload.text  # provenance: labels, contributor
    assert "edited.png" in upload.text and "data:image" not in upload.text


# -- who may do what -------------------------------------------------------------------------


def test_a_viewer_cannot_act(small: tuple[UiNode, Story]) -> None:
    ui, story = small
    vic = ui.browser("vic")
    assert 'action="/ui/signals/' not in vic.get(f"/ui/signals/{story.pdq}").text  # no form
    before = (ui.records(), ui.actions())
    for path, data in [
        (f"/ui/signals/{story.pdq}/opinion", {"verdict": "dispute", "confirm": "yes"}),
        (f"/ui/signals/{story.pdq}/retract", {"confirm": "yes"}),
        ("/ui/act/add", {"hash": "md5:" + "12" * 16, "confirm": "yes"}),
        ("/ui/members/vote", {"action": "remove", "member": "x", "confirm": "yes"}),
        ("/ui/audit", {}),
    ]:
        page = vic.post(path, data | {"csrf_token": vic.csrf()})
        assert page.status == 403 and "this needs the" in page.text, (path, page.text[:300])
    assert vic.get("/ui/act").status == 403
    assert (ui.records(), ui.actions()) == before
    mia = ui.browser("mia")  # a moderator cannot vote
    page = mia.post("/ui/members/vote", {"action": "elect", "csrf_token": mia.csrf()})
    assert page.status == 403 and "needs the admin role" in page.text


def test_a_post_without_the_csrf_token_is_refused(
    small: tuple[UiNode, Story], mia: Browser
) -> None:
    ui, story = small
    before = (ui.records(), ui.actions())
    forms = [
        f"/ui/signals/{story.pdq}/opinion",
        "/ui/act/add",
        "/ui/match",
        "/ui/logout",
        "/ui/members/vote",
        "/ui/audit",
    ]
    for path in forms:
        for token in ({}, {"csrf_token": "forged"}):
            page = mia.post(path, {"verdict": "dispute", "confirm": "yes"} | token)
            assert page.status == 403 and "CSRF token" in page.text, (path, page.text[:300])
    upload = mia.post("/ui/match/upload", _multipart("file", "x.png", b"x"))
    assert upload.status == 403
    cross = mia.post(
        "/ui/act/add", {"csrf_token": mia.csrf()}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status == 403 and "another site" in cross.text
    assert (ui.records(), ui.actions()) == before
    assert mia.get("/ui/").status == 200  # still signed in: the logout was refused too


def test_after_logout_nothing_is_shown(small: tuple[UiNode, Story]) -> None:
    ui, story = small
    browser = ui.browser("mia")
    cookie = browser.session.cookie_jar.filter_cookies(ui.server.make_url("/ui/"))
    out = browser.post("/ui/logout", {"csrf_token": browser.csrf()})
    assert out.status == 200 and "You are signed out" in out.text
    for path in (*PAGES, f"/ui/signals/{story.pdq}", f"/ui/records/{story.pdq}"):
        page = browser.get(path, allow_redirects=False)
        assert page.status == 303 and page.headers["Location"].startswith("/ui/login")
        assert story.pdq_value not in page.text
    replay = ui.browser()  # the old cookie, replayed, is dead
    replay.session.cookie_jar.update_cookies(cookie)
    assert replay.get("/ui/", allow_redirects=False).status == 303
    assert story.noted not in replay.get(f"/ui/signals/{story.pdq}").text
    replay.close()


def test_sessions_cookies_and_the_login_limit(empty: UiNode) -> None:
    browser = empty.browser()
    answer = browser.login("vic", allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == "/ui/"
    cookie = next(c for c in answer.cookies if c.startswith("hashmesh_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; set under TLS
    assert answer.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    bad = empty.browser()
    for _ in range(5):
        assert bad.login("lou", "wrong password!").status == 401
    assert bad.login("lou", PASSWORD).status == 429  # even the right password, for a while
    assert "Sign out" in empty.browser().login("vic").text  # other names still sign in
    forged = empty.browser().post(
        "/ui/login", {"name": "vic", "password": PASSWORD, "csrf_token": "x"}
    )
    assert forged.status == 403
    log = text_of(empty.browser("vic").get("/ui/log").text)
    assert "lou login failed" in log and "vic login" in log


def test_under_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b"], tls=True)
    add_users(nodes[0].home, ("vic", "viewer"))
    ui = UiNode(nodes[0].home, tls=True)
    try:
        answer = ui.browser().login("vic", allow_redirects=False)
        cookie = next(c for c in answer.cookies if c.startswith("hashmesh_session="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Sign out" in ui.browser("vic").get("/ui/").text
    finally:
        ui.close()


def test_the_ui_answers_only_for_a_loopback_host(empty: UiNode) -> None:
    browser = empty.browser()
    assert browser.get("/ui/login", headers={"Host": "evil.example"}).status == 404
    assert browser.get("/ui/login", headers={"Host": "localhost"}).status == 200


def test_the_bearer_token_keeps_working_and_opens_no_page(empty: UiNode) -> None:
    status, _ = empty.api("GET", "/v1/status")
    assert status == 200
    token = Path(empty.home / "api.token").read_text().strip()
    page = empty.browser().get(
        "/ui/", headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
    )
    assert page.status == 303


def test_audit_and_transparency_report_run_live(small: tuple[UiNode, Story]) -> None:
    import time

    ui, _ = small
    mia = ui.browser("mia")
    assert mia.post("/ui/audit", {"csrf_token": mia.csrf()}).status == 200
    deadline = time.monotonic() + 60
    page = mia.get("/ui/audit").text
    while "Running since" in page and time.monotonic() < deadline:
        ui.run(__import__("asyncio").sleep(0.2))
        page = mia.get("/ui/audit").text
    text = text_of(page)
    assert "Clean" in text and "pass" in text and "fork" in text
    report = mia.get("/ui/report").text
    while "Building the report" in report and time.monotonic() < deadline:
        ui.run(__import__("asyncio").sleep(0.2))
        report = mia.get("/ui/report").text
    assert report.count("<svg") == 3 and "Records digest" in report
    mia.close()
