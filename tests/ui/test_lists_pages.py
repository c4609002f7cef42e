"""The web UI shows local lists and the match policy, and on the match page which local list
matched and which federation hits were suppressed here, and why."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from harness import found_federation
from uiapp import Browser, Story, UiNode, add_users, fill_store, md5_of

LOCAL_MD5 = "1ab0c0ffee5eed5a1ad0dd5ca1ab1e00"


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UiNode, Story]]:
    _, nodes = found_federation(tmp_path_factory.mktemp("lists"), ["a", "b"])
    story = fill_store([n.home for n in nodes])
    add_users(nodes[0].home, ("vic", "viewer"), ("mia", "moderator"))
    ui = UiNode(nodes[0].home)
    for body in ({"name": "review", "note": "under review"}, {"name": "logos", "kind": "safelist"}):
        assert ui.api("POST", "/v1/lists", json=body)[0] == 201
    entries = [("review", LOCAL_MD5, "case 17"), ("logos", md5_of(3), "our logo")]
    for name, value, note in entries:
        status, _ = ui.api("POST", f"/v1/lists/{name}/entries",
                           json={"type": "md5", "value": value, "note": note})  # fmt: skip
        assert status == 200
    yield ui, story
    ui.close()


@pytest.fixture
def vic(listed: tuple[UiNode, Story]) -> Iterator[Browser]:
    browser = listed[0].browser("vic")
    yield browser
    browser.close()


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_match_page_names_the_list_and_the_suppressing_safelist(
    listed: tuple[UiNode, Story], vic: Browser
) -> None:
    ui, story = listed
    page = vic.post("/ui/match", {"csrf_token": vic.csrf(),
                                  "hashes": f"md5:{LOCAL_MD5}\nmd5:{md5_of(3)}"})  # fmt: skip
    assert page.status == 200
    shown = text_of(page.text)
    assert "local list review" in shown and "case 17" in shown and "added by token" in shown
    assert "1 suppressed here" in shown
    assert f'href="/ui/signals/{story.disputed}"' in page.text  # the suppressed signal
    assert "safelist logos" in shown and "our logo" in shown
    status, answer = ui.api("POST", "/v1/match", json={"hashes": [
        {"type": "md5", "value": LOCAL_MD5}, {"type": "md5", "value": md5_of(3)}]})  # fmt: skip
    assert status == 200
    assert [r["matched"] for r in answer["results"]] == [True, False]
    assert answer["results"][1]["suppressed"][0]["id"] == story.disputed


def test_the_lists_pages_show_lists_entries_and_policy(vic: Browser) -> None:
    shown = text_of(vic.get("/ui/lists").text)
    assert "review match list on 1 under review" in shown
    assert "logos safelist on 1" in shown
    assert "radius pdq 31 bits, phash 10 bits, dhash 10 bits" in shown
    entries = text_of(vic.get("/ui/lists/review").text)
    assert f"md5 {LOCAL_MD5} case 17" in entries and "Match list review" in entries
    absent = vic.get("/ui/lists/absent")
    assert absent.status == 404 and "no local list named 'absent'" in html.unescape(absent.text)


def test_a_moderator_changes_a_list_and_a_viewer_cannot(listed: tuple[UiNode, Story]) -> None:
    ui, _ = listed
    ui.api("POST", "/v1/lists", json={"name": "scratch"})
    mia, vic = ui.browser("mia"), ui.browser("vic")
    try:
        value = "ab" * 16
        refused = vic.post("/ui/lists/scratch/entries",
                           {"csrf_token": vic.csrf(), "hash": f"md5:{value}"})  # fmt: skip
        assert refused.status == 403 and "needs the moderator role" in refused.text
        added = mia.post("/ui/lists/scratch/entries",
                         {"csrf_token": mia.csrf(), "hash": f"MD5:{value.upper()}",
                          "note": "from a report"})  # fmt: skip
        assert added.status == 200 and f"added md5:{value} to scratch" in text_of(added.text)
        assert f"md5 {value} from a report" in text_of(added.text)
        assert "by ui:mia" in text_of(added.text)
        assert ui.api("POST", "/v1/match", json={"type": "md5", "value": value}
                      )[1]["results"][0]["hits"][0]["source"] == {"kind": "list",
                                                                  "list": "scratch"}  # fmt: skip
        bad = mia.post("/ui/lists/scratch/entries", {"csrf_token": mia.csrf(), "hash": "md5:zz"})
        assert bad.status == 400 and "a md5 hash is 32 hex characters" in text_of(bad.text)
        off = mia.post("/ui/lists/scratch/switch", {"csrf_token": mia.csrf(), "enabled": "false"})
        assert "scratch is switched off" in text_of(off.text)
        assert not ui.api("POST", "/v1/match", json={"type": "md5", "value": value}
                          )[1]["matched"]  # fmt: skip
        gone = mia.post("/ui/lists/scratch/remove", {"csrf_token": mia.csrf(),
                                                     "hash": f"md5:{value}"})  # fmt: skip
        assert f"removed md5:{value} from scratch" in text_of(gone.text)
        log = text_of(mia.get("/ui/log").text)
        assert "list add" in log and "list off" in log and "list remove" in log
    finally:
        mia.close()
        vic.close()
