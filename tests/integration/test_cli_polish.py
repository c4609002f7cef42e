"""The frictions a new operator hits in the first hour (issue 14), each driven through the
real ``hashmesh`` command: every call below is a subprocess, as an operator would type it.

Most tests need no running node: a module-scoped federation of two homes ("Alpha" and
"Delta Co", threshold 2) is founded with the harness and used offline; tests that need a
node start one and stop it.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest
from harness import REPO, found_federation, free_port, hm, ok, ok_json, write_config

from node.cli.demo import demo_images
from node.home import NodeHome

CLASS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The result failed with exit 2 and exactly one stderr line, in words, no traceback."""
    line = harness.one_line_error(result)
    assert not CLASS_NAME.search(line) and "expected None" not in line, line
    return line


class Homes:
    def __init__(self, root: Path) -> None:
        self.root = root
        _, nodes = found_federation(root, ["Alpha", "Delta Co"], threshold=2)
        self.alpha, self.delta = (str(n.home) for n in nodes)
        self.keys = {n.name: n.key for n in nodes}
        self.genesis = root / "federation.json"
        self.genesis.write_bytes(NodeHome(nodes[0].home).genesis_path.read_bytes())


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Homes:
    return Homes(tmp_path_factory.mktemp("polish"))


# ---- --verbose, exit codes and error text -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("-v", "add", "{home}", "--hash", "pdq:abc"), ("add", "{home}", "--hash", "pdq:abc", "-v"),
     ("add", "{home}", "--hash", "pdq:abc", "--verbose")],
    ids=["before", "after", "long-after"],
)  # fmt: skip
def test_verbose_anywhere_shows_a_traceback_and_bad_input_still_exits_2(
    homes: Homes, args: tuple[str, ...]
) -> None:
    argv = [a if a != "{home}" else f"--home={homes.alpha}" for a in args]
    result = hm(*argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hashmesh: error: bad input: --hash: a pdq hash is 64 hex characters")


def test_bad_input_without_verbose_is_one_line_in_words(homes: Homes) -> None:
    line = one_line_error(hm("add", "--home", homes.alpha, "--hash", "pdq:abc"))
    assert line == (
        "hashmesh: error: bad input: --hash: a pdq hash is 64 hex characters "
        "(expected 64 hex chars, got 'abc')"
    )
    label = one_line_error(hm("add", "--home", homes.alpha, "--hash", "md5:" + "a" * 32,
                              "--label", "Not A Label!"))  # fmt: skip
    assert "--label" in label
    retract = one_line_error(hm("retract", "--home", homes.alpha, "xyz"))
    assert retract == (
        "hashmesh: error: invalid value: signal must be 64 lowercase hex characters (got 'xyz')"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [(("add", "--bogus"), "usage: No such option"),
     (("nosuch",), "usage: No such command 'nosuch'"),
     (("member", "vote", "remove"), "usage: Missing argument 'MEMBER'"),
     (("signals", "--limit", "0"), "usage: Invalid value for '--limit'")],
    ids=["option", "command", "argument", "value"],
)  # fmt: skip
def test_usage_errors_are_one_line_like_every_other_error(
    args: tuple[str, ...], words: str
) -> None:
    line = one_line_error(hm(*args))
    assert line.startswith(f"hashmesh: error: {words}"), line
    assert line.endswith("--help')"), line


# ---- member arguments; federation show -----------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Homes:
    """A federation of its own, for a test that writes records."""
    return Homes(tmp_path)


def _voted_against(output: str) -> str:
    return str(json.loads(output)["record"]["body"]["member"])


def test_member_arguments_take_a_name_in_any_case_or_a_key_prefix(fresh: Homes) -> None:
    delta_key, alpha_key = fresh.keys["Delta Co"], fresh.keys["Alpha"]
    human = ok("member", "vote", "remove", "--home", fresh.alpha, "Delta Co")
    assert human.startswith(f"voted to remove 'Delta Co' ({delta_key}) after seq ")
    by_prefix = ok("member", "vote", "remove", "--home", fresh.delta, alpha_key[:6], "--json")
    assert _voted_against(by_prefix) == alpha_key
    for same in ("dELTA cO", delta_key.upper()):  # the same member again: already voted
        again = one_line_error(hm("member", "vote", "remove", "--home", fresh.alpha, same))
        assert f"already voted to remove {delta_key[:16]}" in again, again
    ok("add", "--home", fresh.alpha, "--hash", "md5:" + "a" * 32)
    listed = ok_json("signals", "--home", fresh.alpha, "--member", "ALPHA")["signals"]
    assert [s["member_name"] for s in listed] == ["Alpha"]
    assert ok_json("signals", "--home", fresh.alpha, "--member", "delta co")["signals"] == []

    unknown = one_line_error(hm("member", "vote", "remove", "--home", fresh.alpha, "Nobody"))
    assert unknown == (
        "hashmesh: error: bad input: no member is named 'Nobody' or has a key starting with it "
        "(members: 'Alpha', 'Delta Co'; see 'hashmesh federation show')"
    )
    assert "no member is named 'zz'" in one_line_error(
        hm("signals", "--home", fresh.alpha, "--member", "zz")
    )


def test_an_ambiguous_member_argument_is_refused_naming_the_candidates() -> None:
    from node.cli.main import resolve_member
    from node.errors import InputError

    members = [
        {"name": name, "identity": key, "key": key}
        for name, key in (("Alpha", "ab12" + "0" * 60), ("alpha", "ab34" + "0" * 60))
    ]
    assert resolve_member(members, "AB3")["name"] == "alpha"
    for text in ("ab", "ALPHA"):
        with pytest.raises(InputError, match=r"matches 2 members: 'Alpha' \(ab12"):
            resolve_member(members, text)


def test_federation_show_is_the_current_view(fresh: Homes, tmp_path: Path) -> None:
    newco = tmp_path / "newco"
    ok("init", "--home", str(newco), "--name", "Newco")
    card = tmp_path / "newco.card.json"
    card.write_text(ok("card", "--home", str(newco)))
    newco_key = json.loads(card.read_text())["key"]
    ok("member", "vote", "admit", "--home", fresh.alpha, str(card))
    ok("member", "vote", "remove", "--home", fresh.alpha, "Delta Co")
    shown = ok_json("federation", "show", "--home", fresh.alpha)
    assert [(v["action"], v["name"], v["votes"], v["threshold"], v["voters"])
            for v in shown["pending_votes"]] == [
        ("admit", "Newco", 1, 2, ["Alpha"]), ("remove", "Delta Co", 1, 2, ["Alpha"]),
    ]  # fmt: skip
    assert "entity:" in shown["taxonomy"]
    text = ok("federation", "show", "--home", fresh.alpha)
    assert f"admit 'Newco' as member ({newco_key[:16]}…): 1 of 2 (voted: Alpha)" in text
    assert "taxonomy  behaviour:glorification" in text and "entity:NAME" in text

    ok("member", "vote", "admit", "--home", fresh.delta, str(card))  # the second vote, on Delta
    votes = tmp_path / "delta.jsonl"
    ok("export", "--home", fresh.delta, "-o", str(votes))
    ok("import", "--home", fresh.alpha, str(votes))
    shown = ok_json("federation", "show", "--home", fresh.alpha)
    assert [(m["name"], m["founder"], m["admitted_by"], m["removed"])
            for m in shown["members"]] == [
        ("Alpha", True, [], False), ("Delta Co", True, [], False),
        ("Newco", False, ["Alpha", "Delta Co"], False),
    ]  # fmt: skip
    assert [(v["action"], v["name"]) for v in shown["pending_votes"]] == [("remove", "Delta Co")]
    text = ok("federation", "show", "--home", fresh.alpha)
    assert re.search(r"member +Newco +[0-9a-f]{64}  admitted by Alpha, Delta Co", text), text


# ---- nothing overwritten, nothing half-made ------------------------------------------------


def test_federation_create_prints_the_draft_and_never_overwrites_a_file(
    homes: Homes, tmp_path: Path
) -> None:
    cards = []
    for home in (homes.alpha, homes.delta):
        cards.append(tmp_path / f"{len(cards)}.card.json")
        cards[-1].write_text(ok("card", "--home", home))
    signed = tmp_path / "federation.json"  # the genesis every founder signed, in the cwd
    signed.write_bytes(homes.genesis.read_bytes())
    create = ["federation", "create", "--name", "Second", "--threshold", "1", *map(str, cards)]

    printed = hm(*create, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["body"]["name"] == "Second"
    assert "hashmesh federation sign" in printed.stderr
    assert signed.read_bytes() == homes.genesis.read_bytes()

    refused = one_line_error(hm(*create, "-o", "federation.json", cwd=tmp_path))
    assert refused == (
        "hashmesh: error: bad input: federation.json exists; refusing to overwrite it "
        "(pass --force to replace it)"
    )
    assert signed.read_bytes() == homes.genesis.read_bytes()
    ok(*create, "-o", str(signed), "--force")
    assert json.loads(signed.read_text())["body"]["name"] == "Second"

    draft = tmp_path / "draft.json"  # the printed draft, saved by the shell, signs and joins
    draft.write_text(printed.stdout)
    signing = ok("federation", "sign", "--home", homes.alpha, str(draft))
    assert signing == "signed; 1 founder signature(s) still missing\n"

    backup = tmp_path / "backup.jsonl"
    backup.write_text("keep me\n")
    assert "backup.jsonl exists; refusing to overwrite it" in one_line_error(
        hm("export", "--home", homes.alpha, "-o", str(backup))
    )
    assert backup.read_text() == "keep me\n"


def test_a_failing_init_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--home", str(tmp_path / "a"), "--name", ""], {}, "--name '': a name is 1..100"),
        (["--home", str(empty), "--name", " padded"], {}, "--name ' padded': a name is"),
        (["--home", str(tmp_path / "b" / "c"), "--name", "B", "--listen", "nope"], {},
         "listen must be HOST:PORT"),
        (["--home", str(tmp_path / "d"), "--name", "D"], {"HASHMESH_API_LISTEN": "8.8.8.8:1"},
         "api_listen serves plain HTTP and must be a loopback address"),
    ]  # fmt: skip
    for args, env, words in cases:
        assert words in one_line_error(hm("init", *args, env=env))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert list(empty.iterdir()) == []
    ok("init", "--home", str(empty), "--name", "Fine")  # the same directory, good input
    assert (empty / "member.key").exists()


# ---- a damaged federation.json; config.toml checked by every command ------------------------


def test_join_reinstalls_a_damaged_genesis_when_safe_and_says_how_otherwise(
    homes: Homes, tmp_path: Path
) -> None:
    other = Homes(tmp_path / "other")  # another federation, properly signed
    home = tmp_path / "alpha-copy"
    home.mkdir()
    for name in ("member.key", "api.token", "config.toml"):
        (home / name).write_bytes((Path(homes.alpha) / name).read_bytes())
    (home / "federation.json").write_text("{garbage")
    damaged = one_line_error(hm("signals", "--home", str(home)))
    assert "federation.json is damaged (malformed JSON" in damaged
    assert f"re-install it with 'hashmesh federation join --home {home} GENESIS'" in damaged

    repaired = ok("federation", "join", "--home", str(home), str(homes.genesis))  # no database
    assert repaired.endswith("replaced the damaged " + str(home / "federation.json") + "\n")
    ok("add", "--home", str(home), "--hash", "md5:" + "c" * 32)  # now it has a database

    (home / "federation.json").write_text("{garbage")
    refused = one_line_error(hm("federation", "join", "--home", str(home), str(other.genesis)))
    assert "federation.json is damaged" in refused
    assert "belongs to federation 'test federation'" in refused
    assert "join with the genesis of 'test federation' to re-install it" in refused
    assert (home / "federation.json").read_text() == "{garbage"
    again = ok_json("federation", "join", "--home", str(home), str(homes.genesis))
    assert again["repaired"] is True
    assert ok_json("signals", "--home", str(home))["signals"][0]["value"] == "c" * 32


@pytest.mark.parametrize(
    ("config", "words"),
    [("not = [valid toml", "config.toml: Invalid value (at line 1, column 8)"),
     ('name = "x"\nbogus_key = 1\n', "config.toml: unknown key(s): bogus_key"),
     ('name = "x"\n[gossip]\nintervall_s = 1\n', "unknown key(s) in [gossip]: intervall_s")],
    ids=["garbage", "unknown-key", "unknown-section-key"],
)  # fmt: skip
def test_every_command_reports_a_bad_config_as_serve_does(
    homes: Homes, tmp_path: Path, config: str, words: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for name in ("member.key", "api.token", "federation.json"):
        (home / name).write_bytes((Path(homes.alpha) / name).read_bytes())
    (home / "config.toml").write_text(config)
    h = str(home)
    serve = one_line_error(hm("serve", "--home", h))
    assert words in serve
    commands = [
        ["status"], ["sync"], ["peers"], ["peers", "--home", h, "add", "http://127.0.0.1:9/"],
        ["signals"], ["add", "--hash", "md5:" + "d" * 32], ["card"], ["export"],
        ["federation", "show"], ["member", "vote", "remove", "Alpha"], ["match", "--hash",
        "md5:" + "d" * 32], ["import", str(homes.genesis)], ["retract", "0" * 64],
        ["audit", "--db", str(home / "hashmesh.db")],
    ]  # fmt: skip
    for command in commands if "bogus_key" in config else commands[:3]:  # all, for one
        with_home = command if "--home" in command else [*command, "--home", h]
        assert one_line_error(hm(*with_home)) == serve, command
    assert sorted(p.name for p in home.iterdir()) == [
        "api.token", "config.toml", "federation.json", "member.key",
    ]  # fmt: skip


# ---- sync and peers -------------------------------------------------------------------------


class _NotAPeer(http.server.BaseHTTPRequestHandler):
    """Answers every request 404 with a text body (an URL that is no hashmesh node)."""

    def do_GET(self) -> None:
        body = b"not here \xff\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_a_peer() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAPeer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_sync_refuses_unknown_peers_and_fails_on_unreachable_ones(
    tmp_path: Path, not_a_peer: str
) -> None:
    _, (node, _) = found_federation(tmp_path, ["Alpha", "Beta"])
    node.peers = []
    write_config(node)
    home = str(node.home)
    node.start()
    try:
        nowhere = f"http://127.0.0.1:{free_port()}/"
        refused = one_line_error(hm("sync", "--home", home, "--peer", nowhere))
        assert refused == (
            f"hashmesh: error: bad input: {nowhere} is not a peer of this node (see 'hashmesh "
            "peers'); add it first with 'hashmesh peers add URL' (or under peers in config.toml)"
        )
        assert node.api("GET", "/v1/peers")["peers"] == []
        assert ok("sync", "--home", home) == "no peers\n"

        ok("peers", "add", "--home", home, nowhere)
        ok("peers", "add", "--home", home, not_a_peer)
        result = hm("sync", "--home", home)
        line = one_line_error(result)
        assert line.startswith("hashmesh: error: peer error: 2 of 2 peer(s) could not be synced")
        assert f"{not_a_peer}: error: {not_a_peer} answered 404 to /v1/heads: not here" in (
            result.stdout
        )
        one = hm("sync", "--home", home, "--peer", nowhere, "--json")
        assert one.returncode == 2 and json.loads(one.stdout)["errors"][0]["peer"] == nowhere
        status = ok("status", "--home", home)
        assert f"peer {not_a_peer}  never contacted" in status
        assert "answered 404 to /v1/heads: not here \ufffd" in status
        assert "b'" not in status and not CLASS_NAME.search(status), status

        with pytest.raises(urllib.error.HTTPError) as unknown:
            node.api("POST", "/v1/sync", {"peer": f"http://127.0.0.1:{free_port()}/"})
        assert unknown.value.code == 404
        assert "not a peer of this node" in json.loads(unknown.value.read())["detail"]
        assert len(node.api("GET", "/v1/peers")["peers"]) == 2  # the unknown URL was not kept

        removed = ok_json("peers", "remove", "--home", home, nowhere)  # through the running node
        assert removed == {"removed": True, "source": "added", "url": nowhere}
        assert [p["url"] for p in node.api("GET", "/v1/peers")["peers"]] == [not_a_peer]
        assert "is not a peer added here" in one_line_error(
            hm("peers", "remove", "--home", home, nowhere)
        )
    finally:
        node.stop()
    assert [p["url"] for p in ok_json("peers", "--home", home)["peers"]] == [not_a_peer]
    assert "is not a peer added here" in one_line_error(
        hm("peers", "remove", "--home", home, nowhere)
    )


def test_peers_add_refuses_plain_http_on_a_tls_node(tmp_path: Path) -> None:
    home = str(tmp_path / "tls-node")
    ok("init", "--home", home, "--name", "Secure", "--tls")
    line = one_line_error(hm("peers", "add", "--home", home, "http://peer.example:7400/"))
    assert line == (
        "hashmesh: error: bad input: http://peer.example:7400/: this node serves TLS and never "
        "contacts a plain http:// peer; give the peer's https:// URL"
    )
    own = one_line_error(hm("peers", "add", "--home", home, "https://127.0.0.1:7400/"))
    assert own.endswith("is this node's own URL")
    assert not (tmp_path / "tls-node" / "hashmesh.db").exists()


# ---- --json: one object per command, one style, records nested -----------------------------


def one_object(output: str) -> dict[str, Any]:
    """output is exactly one line holding one JSON object, in the one style of the CLI."""
    assert output.endswith("\n") and output.count("\n") == 1, output
    data = json.loads(output)
    assert isinstance(data, dict)
    compact = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert output.rstrip("\n") == compact
    return data


def test_json_is_one_compact_object_with_records_nested(fresh: Homes, tmp_path: Path) -> None:
    alpha, delta = fresh.alpha, fresh.delta
    newco = tmp_path / "newco"
    card = tmp_path / "newco.card.json"
    outputs = {
        "init": ok("init", "--home", str(newco), "--name", "Newcö", "--json"),
        "card": ok("card", "--home", str(newco)),
        "federation show": ok("federation", "show", "--home", alpha, "--json"),
        "federation join": ok("federation", "join", "--home", alpha, str(fresh.genesis),
                              "--json"),
        "add": ok("add", "--home", delta, "--hash", "md5:" + "e" * 32, "--json"),
    }  # fmt: skip
    card.write_text(outputs["card"])
    signal = one_object(outputs["add"])["signals"][0]["id"]
    backup = tmp_path / "delta.jsonl"
    ok("export", "--home", delta, "-o", str(backup))
    outputs |= {
        "import": ok("import", "--home", alpha, str(backup), "--json"),
        "opinion": ok("opinion", "--home", alpha, signal, "dispute", "--json"),
        "retract": ok("retract", "--home", delta, signal, "--json"),
        "member vote admit": ok("member", "vote", "admit", "--home", alpha, str(card), "--json"),
        "member vote remove": ok("member", "vote", "remove", "--home", alpha, "delta co",
                                 "--json"),
        "signals": ok("signals", "--home", delta, "--all", "--json"),
        "peers add": ok("peers", "add", "--home", alpha, "http://127.0.0.1:9/", "--json"),
        "peers": ok("peers", "--home", alpha, "--json"),
        "peers remove": ok("peers", "remove", "--home", alpha, "http://127.0.0.1:9/", "--json"),
        "hash": ok("hash", str(demo_images(tmp_path)[0]), "--json"),
        "audit": ok("audit", "--db", str(Path(alpha) / "hashmesh.db"), "--home", alpha,
                    "--workers", "1", "--json"),
        "report": ok("report", "--db", str(Path(alpha) / "hashmesh.db"), "--home", alpha,
                     "--workers", "1", "--json"),
        "federation create": ok("federation", "create", "--name", "X", "--threshold", "1",
                                str(card)),
    }  # fmt: skip
    data = {name: one_object(text) for name, text in outputs.items()}
    assert data["init"]["name"] == "Newcö"  # UTF-8, not \\u escapes
    for name in ("opinion", "retract", "member vote admit", "member vote remove"):
        record = data[name]["record"]
        assert isinstance(record, dict) and record["kind"] == data[name]["kind"], name
        assert re.fullmatch(r"[0-9a-f]{128}", record["sig"]) and isinstance(record["ts"], int)
    assert data["retract"]["record"]["body"] == {"signal": signal}
    listed = {s["id"]: s for s in data["signals"]["signals"]}
    assert listed[signal]["status"] == "retracted" and isinstance(listed[signal]["ts"], int)


def test_every_command_with_json_is_in_the_readme_schema_table() -> None:
    import click

    from node.cli.main import cli

    readme = (REPO / "README.md").read_text("utf-8")
    table = readme.split("### JSON output", 1)[1].split("\n#", 1)[0]
    documented = {c for row in re.findall(r"^\| (.+?) \|", table, re.M)
                  for c in re.findall(r"`([a-z][a-z ]*)`", row)}  # fmt: skip

    def walk(group: click.Group, prefix: str = "") -> list[str]:
        found = []
        for name, command in group.commands.items():
            path = f"{prefix}{name}"
            if any(p.name == "as_json" for p in command.params):
                found.append(path)
            if isinstance(command, click.Group):
                found += walk(command, f"{path} ")
        return found

    commands = walk(cli)
    assert len(commands) > 15
    assert set(commands) <= documented, set(commands) - documented


# ---- progress of long offline commands ------------------------------------------------------

PROGRESS_LINE = re.compile(r"hashmesh: import: hashes [\d,]+ of [\d,]+ \(\d+%\)")


def _hash_list(path: Path, start: int, count: int) -> Path:
    path.write_text("".join(f"sha256:{i:064x}\n" for i in range(start, start + count)))
    return path


def test_import_and_audit_show_progress_off_a_terminal(fresh: Homes, tmp_path: Path) -> None:
    home = fresh.alpha
    forced = hm("import", "--home", home, str(_hash_list(tmp_path / "a.txt", 0, 300)),
                "--progress")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr.splitlines() == [
        "hashmesh: import: hashes 0 of 300 (0%)", "hashmesh: import: hashes 300 of 300 (100%)",
    ]  # fmt: skip
    assert forced.stdout == "300 hashes: 300 new signals signed, 0 already listed\n"

    quick = hm("import", "--home", home, str(_hash_list(tmp_path / "b.txt", 300, 100)))
    assert (quick.returncode, quick.stderr) == (0, "")  # one line per 10 s: none yet

    started = time.monotonic()
    every = {"HASHMESH_PROGRESS_INTERVAL_S": "0.05"}
    slow = hm("import", "--home", home, str(_hash_list(tmp_path / "c.txt", 400, 1000)), env=every)
    elapsed = time.monotonic() - started
    lines = slow.stderr.splitlines()
    assert slow.returncode == 0 and lines, slow.stderr
    assert all(PROGRESS_LINE.fullmatch(line) for line in lines), lines
    assert len(lines) <= elapsed / 0.05 + 1  # at the rate asked for, not one per hash
    silent = hm("import", "--home", home, str(tmp_path / "c.txt"), "--no-progress",
                env={"HASHMESH_PROGRESS_INTERVAL_S": "0"})  # fmt: skip
    assert (silent.returncode, silent.stderr) == (0, "")

    audited = hm("audit", "--db", str(Path(home) / "hashmesh.db"), "--progress", "--json")
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["clean"] is True
    stages = audited.stderr.splitlines()
    assert stages[0].startswith("hashmesh: audit: verifying records ")
    assert "hashmesh: audit: folding state" in stages
    assert stages[-1] == "hashmesh: audit: done 1 of 1 (100%)"
