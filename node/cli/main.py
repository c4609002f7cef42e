"""The ``hashmesh`` command line.

One error boundary (``main``): a ``NodeError`` or ``ProtocolError`` prints one line
``hashmesh: error: …`` and exits 2 (a traceback only with ``--verbose``). Exit codes:
0 success; 1 "no" answers (``match`` found nothing, ``audit`` found violations);
2 errors (bad input, missing home, node not reachable).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn

import click

from node.cli import audit as cli_audit
from node.cli import lists as cli_lists
from node.cli import moderation as cli_moderation
from node.cli import replica as cli_replica
from node.cli import signals as cli_signals
from node.cli import tokens as cli_tokens
from node.cli import transfer as cli_transfer
from node.cli import users as cli_users
from node.cli.backend import LocalApi, open_backend
from node.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    VERBOSE,
    api,
    authored,
    emit,
    home_option,
    json_option,
    json_text,
    resolve_member,
    verbose_option,
)
from node.config import DEFAULT_PORT, load_config
from node.errors import ConfigError, InputError, NodeError, PeerError, explain
from node.home import NodeHome, init_home
from node.runtime import tune_for_bulk_records
from protocol.bodies import VoteBody
from protocol.encoding import decode_canonical, encode_canonical
from protocol.errors import ProtocolError
from protocol.federation import (
    Founder,
    draft_genesis,
    missing_signatures,
    sign_genesis,
    verify_genesis,
)


@click.group()
@click.version_option(package_name="hashmesh")
def cli() -> None:
    """hashmesh: a federated, peer-to-peer exchange of signed hashes of harmful content.

    Every command takes --help. Exit status: 0 success; 1 a "no" answer (match found nothing,
    audit found violations); 2 an error or bad usage, printed as one line (--verbose, before
    or after the command, adds a traceback). The node home is --home DIR or $HASHMESH_HOME.
    """
    logging.basicConfig(
        level=logging.DEBUG if VERBOSE else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


cli.params.insert(0, verbose_option())


@cli.command()
@click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), envvar="HASHMESH_HOME",
    default=Path("."), show_default="$HASHMESH_HOME or .", help="The node home directory.",
)  # fmt: skip
@click.option("--name", required=True, help="This member's display name.")
@click.option("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", show_default=True)
@click.option("--url", default=None, help="URL peers use to reach this node.")
@click.option(
    "--peer", "peers", multiple=True,
    help="Seed peer URL (repeatable); pin an https seed: https://HOST:PORT/#spki=<hex>.",
)  # fmt: skip
@click.option(
    "--tls/--no-tls", default=None,
    help="Serve HTTPS with the home's certificate [default: on unless loopback-only].",
)  # fmt: skip
@json_option
def init(
    home: Path,
    name: str,
    listen: str,
    url: str | None,
    peers: tuple[str, ...],
    tls: bool | None,
    as_json: bool,
) -> None:
    """Create a node home: member key, API token, TLS certificate, config."""
    from node.net.tls import card_spki, seed_url

    node_home = init_home(home, name=name, listen=listen, url=url, peers=peers, tls=tls)
    key = node_home.key()
    config = load_config(home)
    spki = card_spki(config)
    seed = seed_url(config.url, spki)
    transport = (
        f"TLS on: key fingerprint {spki}\nother members seed this node with {seed}"
        if config.tls.enabled
        else "TLS off: plain HTTP, loopback only (hashmesh init --tls for a public node)"
    )
    emit(
        {"home": str(home), "key": key.public, "name": name, "url": config.url,
         "tls": {"enabled": config.tls.enabled, "spki": spki},
         "seed": seed},
        as_json,
        f"initialised {home} for {name!r}\nmember key {key.public}\n{transport}\n"
        "next: share 'hashmesh card' with the other founders",
    )  # fmt: skip


def _card(home: NodeHome) -> dict[str, str]:
    from node.net.tls import card_spki, seed_url

    config = load_config(home.path)
    spki = card_spki(config)
    card = {"name": config.name, "key": home.key().public, "url": config.url, "role": "member"}
    return card | ({"tls": spki, "seed": seed_url(config.url, spki)} if spki else {})


@cli.command()
@home_option
@click.option("--role", type=click.Choice(["member", "auditor"]), default="member")
def card(home: Path, role: str) -> None:
    """Print this member's public card (name, key, URL) as JSON."""
    click.echo(json_text(_card(NodeHome(home).require()) | {"role": role}))


@cli.group()
def federation() -> None:
    """Found, sign, join and show a federation."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


@federation.command("create")
@click.option("--name", required=True, help="Federation name.")
@click.option("--threshold", type=int, required=True, help="Votes needed to admit/remove.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the draft to FILE (default: print it on standard output).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.argument("cards", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def federation_create(
    name: str, threshold: int, output: Path | None, force: bool, cards: tuple[Path, ...]
) -> None:
    """Draft an unsigned genesis from the founders' CARD files.

    Prints the draft, or writes it to --output; an existing file (perhaps a genesis the
    founders already signed) is never overwritten without --force.
    """
    founders = [Founder(c["name"], c["key"], c["role"]) for c in map(_read_card, cards)]
    document = encode_canonical(draft_genesis(name, threshold, founders))
    if output is None:
        click.echo(document.decode())
        click.echo("every founder now runs 'hashmesh federation sign FILE' on it", err=True)
        return
    write_new(output, document, force=force)
    click.echo(f"wrote {output}: every founder now runs 'hashmesh federation sign {output}'")


def write_new(path: Path, data: bytes, *, force: bool) -> None:
    """Write path whole (a temporary file renamed over it), refusing an existing file
    unless force."""
    if path.exists() and not force:
        raise InputError(f"{path} exists; refusing to overwrite it (pass --force to replace it)")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e


def _read_card(path: Path) -> dict[str, str]:
    """A member card ('hashmesh card' output): name, key and role."""
    card = _read_json(path)
    if not isinstance(card, dict) or not {"name", "key"} <= card.keys():
        raise InputError(f"{path} is not a member card (JSON with name and key)")
    return {"name": str(card["name"]), "key": str(card["key"]).strip().lower(),
            "role": str(card.get("role", "member"))}  # fmt: skip


@federation.command("sign")
@home_option
@click.argument("document", type=click.Path(exists=True, path_type=Path))
def federation_sign(home: Path, document: Path) -> None:
    """Add this member's signature to a genesis document (in place)."""
    signed = sign_genesis(_read_json(document), NodeHome(home).require().key())
    document.write_bytes(encode_canonical(signed))
    missing = missing_signatures(signed)
    click.echo(f"signed; {len(missing)} founder signature(s) still missing")


@federation.command("join")
@home_option
@click.argument("document", type=click.Path(exists=True, path_type=Path))
@json_option
def federation_join(home: Path, document: Path, as_json: bool) -> None:
    """Verify every founder signature and install the federation in this home."""
    node_home = NodeHome(home).require()
    data = document.read_bytes().rstrip(b"\n")  # as printed by 'federation create'
    fed = verify_genesis(decode_canonical(data, max_bytes=1 << 20))  # type: ignore[arg-type]
    repaired = node_home.install_federation(fed)
    note = f"\nreplaced the damaged {node_home.genesis_path}" if repaired else ""
    emit({"federation": fed.id, "name": fed.name, "repaired": repaired}, as_json,
         f"joined {fed.name!r} ({fed.id}){note}")  # fmt: skip


@federation.command("show")
@home_option
@json_option
def federation_show(home: Path, as_json: bool) -> None:
    """Print the federation as this node sees it now: id, threshold, every member (founders,
    admitted, removed), the label taxonomy and the votes still short of the threshold."""
    from node.store.membership_view import members_json, pending_votes
    from protocol.membership import derive_membership

    node_home = NodeHome(home).require()
    fed = node_home.federation()
    membership, records = derive_membership(fed, {}, ()), []
    if node_home.db_path.exists():
        from node.store.store import Store

        with Store.open(node_home.db_path, fed, readonly=True) as store:
            membership, records = store.membership(), store.membership_records()
    data = {
        "id": fed.id,
        "name": fed.name,
        "threshold": fed.threshold,
        "founders": [f.to_json() for f in fed.founders],
        "members": members_json(membership),
        "taxonomy": list(fed.taxonomy),
        "pending_votes": pending_votes(fed, membership, records),
    }
    emit(data, as_json, _federation_text(data))


def _federation_text(data: dict[str, Any]) -> str:
    lines = [
        f"{data['name']}  id {data['id']}",
        f"threshold {data['threshold']} (votes to admit or remove a member)",
        "members",
    ]
    for m in data["members"]:
        how = "founder" if m["founder"] else f"admitted by {', '.join(m['admitted_by'])}"
        state = "  REMOVED" if m["removed"] else ""
        lines.append(f"  {m['role']:8s} {m['name']:20s} {m['key']}  {how}{state}")
    lines.append(
        "taxonomy  " + " ".join(t + ("NAME" if t.endswith(":") else "") for t in data["taxonomy"])
    )
    pending = data["pending_votes"]
    lines.append("pending votes" + ("" if pending else "  none"))
    for v in pending:
        role = f" as {v['role']}" if v["role"] else ""
        lines.append(
            f"  {v['action']} {v['name']!r}{role} ({v['member'][:16]}…): {v['votes']} of "
            f"{v['threshold']} (voted: {', '.join(v['voters'])})"
        )
    return "\n".join(lines)


@cli.command()
@home_option
@click.option("--listen", default=None, help="HOST:PORT to listen on (overrides config).")
@click.option("--peer", "peers", multiple=True, help="Extra seed peer URL (repeatable).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
def serve(home: Path, listen: str | None, peers: tuple[str, ...], log_format: str) -> None:
    """Run the node: peer API, local API and gossip, until SIGTERM/SIGINT."""
    from node.net.serve import run_node

    config = load_config(home).with_overrides(listen=listen, peers=peers)
    run_node(config, log_format=log_format)


@cli.command()
@home_option
@json_option
def status(home: Path, as_json: bool) -> None:
    """Show the running node's store, members, peers and forks."""
    data = api(NodeHome(home).require(), "GET", "/v1/status")
    store = data["store"]
    lines = [
        f"{data['node']['name']} ({data['node']['url']}) in {data['federation']['name']}",
        f"records {store.get('records')}  active signals {store.get('active_signals')}  "
        f"authors {store.get('authors')}  forks {store.get('forks')}",
        f"members {len(data['members'])}  peers {len(data['peers'])}",
    ]
    lines += [_peer_line(p) for p in data["peers"]]
    emit(data, as_json, "\n".join(lines + _membership_lines(data) + _type_gate_lines(data)))


def _type_gate_lines(status: dict[str, Any]) -> list[str]:
    """Signal types this node knows that are not enabled yet, and enabled ones it does not
    know (SPEC 11: it must be upgraded)."""
    gate = status.get("signal_types") or {}
    lines = [
        f"  signal type {name} not enabled yet: waiting for {', '.join(names)} to announce it"
        for name, names in sorted((gate.get("waiting") or {}).items())
    ]
    if gate.get("unknown_enabled"):
        lines.append(f"  upgrade needed: signal types {', '.join(gate['unknown_enabled'])} are "
                     "enabled in the federation but unknown to this node")  # fmt: skip
    return lines


def _peer_line(peer: dict[str, Any]) -> str:
    since = peer["seconds_since_contact"]
    contact = "never contacted" if since is None else f"last contact {since}s ago"
    lag = peer["lag_records"]
    return f"  peer {peer['url']}  {contact}  behind {lag['behind']:,}  ahead {lag['ahead']:,}" + (
        f"  error {peer['last_error']}" if peer["last_error"] else ""
    )


def _membership_lines(status: dict[str, Any]) -> list[str]:
    """Forked and removed members, and the peer URLs not contacted because of them."""
    lines = [
        f"  fork: {f['member']} ({f['author'][:16]}…) signed two records at seq {f['seq']}; "
        f"its log counts through seq {f['counts_through']}, peers refuse its key"
        for f in status.get("forks", [])
    ]
    for m in status["members"]:
        if m["removed"]:
            after = (m.get("frozen") or {}).get("after")
            lines.append(f"  removed: {m['name']} ({m['key'][:16]}…), counts through seq {after}")
    barred = status.get("barred_peers", [])
    return lines + [f"  not contacted: {b['url']} ({b['reason']})" for b in barred]


@cli.command()
@home_option
@click.option("--peer", default=None, help="Sync with this peer only (one of 'hashmesh peers').")
@json_option
def sync(home: Path, peer: str | None, as_json: bool) -> None:
    """Run one anti-entropy round now with every known peer (or one).

    Exits 2 when any peer could not be synced (after printing what was done); an URL that is
    not a peer of this node is refused, never added ('hashmesh peers add' adds one).
    """
    from rich.console import Console

    node_home, console = NodeHome(home).require(), Console(stderr=True)
    local = LocalApi.for_home(node_home)
    if peer is not None:
        peer = _known_peer(local.call("GET", "/v1/peers")["peers"], peer)
    spinner = console.is_terminal and not as_json
    with console.status("syncing with peers…") if spinner else nullcontext():
        data = local.call("POST", "/v1/sync", {"peer": peer} if peer else {})
    lines = [
        f"{r['peer']}: pulled {r['pulled']} (new {r['accepted']}), pushed {r['pushed']}"
        for r in data["reports"]
    ] + [f"{e['peer']}: error: {e['error']}" for e in data["errors"]]
    emit(data, as_json, "\n".join(lines) or "no peers")
    if data["errors"]:
        first, tried = data["errors"][0], len(data["reports"]) + len(data["errors"])
        raise PeerError(
            f"{len(data['errors'])} of {tried} peer(s) could not be synced; first: {first['error']}"
        )


def _known_peer(known: Sequence[dict[str, Any]], url: str) -> str:
    """url as this node lists it among its peers, or InputError."""
    from node.config import split_seed

    base, _ = split_seed(url)
    if any(p["url"] == base for p in known):
        return url
    raise InputError(
        f"{base} is not a peer of this node (see 'hashmesh peers'); add it first with "
        "'hashmesh peers add URL' (or under peers in config.toml)"
    )


@cli.group(invoke_without_command=True)
@home_option
@json_option
@click.pass_context
def peers(ctx: click.Context, home: Path, as_json: bool) -> None:
    """List this node's peers ('add URL' adds one, 'remove URL' removes one)."""
    if ctx.invoked_subcommand is not None:
        return
    with open_backend(NodeHome(home).require()) as backend:
        rows = backend.peers()
    lines = [
        f"{p['url']}  ({p.get('source') or '?'})"
        + (f"  last error {p['last_error']}" if p.get("last_error") else "")
        for p in rows
    ]
    emit({"peers": rows}, as_json, "\n".join(lines) or "no peers")


def _peers_home(ctx: click.Context, home: Path) -> Path:
    """--home given to 'hashmesh peers --home DIR add URL' counts for the subcommand."""
    if ctx.get_parameter_source("home") is click.core.ParameterSource.DEFAULT and ctx.parent:
        return Path(ctx.parent.params["home"])
    return home


@peers.command("add")
@home_option
@click.argument("url")
@json_option
@click.pass_context
def peers_add(ctx: click.Context, home: Path, url: str, as_json: bool) -> None:
    """Add a peer URL (kept in the store; gossip uses it from now on).

    An https peer is contacted once its member's announce pins its TLS key; a seed pinned by
    hand (URL#spki=HEX) belongs in config.toml's peers or 'hashmesh serve --peer'. A node
    that serves TLS refuses plain http:// peers.
    """
    from node.config import normalise_peer

    node_home = NodeHome(_peers_home(ctx, home)).require()
    if "#" in url:
        raise InputError(
            f"{url}: pinned seeds go in config.toml 'peers' or 'hashmesh serve --peer URL'"
        )
    config, base = load_config(node_home.path), normalise_peer(url)
    if config.tls.enabled and not base.startswith("https://"):
        raise InputError(
            f"{base}: this node serves TLS and never contacts a plain http:// peer; give the "
            "peer's https:// URL"
        )
    if base in config.answers_to:
        raise InputError(f"{base} is this node's own URL")
    with open_backend(node_home) as backend:
        peer = backend.add_peer(base)
    emit(peer, as_json, f"added peer {peer['url']}")


@peers.command("remove")
@home_option
@click.argument("url")
@json_option
@click.pass_context
def peers_remove(ctx: click.Context, home: Path, url: str, as_json: bool) -> None:
    """Remove a peer added with 'peers add' (on a running node too).

    A seed from config.toml is removed there; a URL a member announced in a signed record
    stays a peer while that member announces it.
    """
    from node.config import normalise_peer

    node_home = NodeHome(_peers_home(ctx, home)).require()
    config, base = load_config(node_home.path), normalise_peer(url.partition("#")[0])
    if base in config.peers:
        raise InputError(f"{base} is a seed in {node_home.path / 'config.toml'}: remove it there")
    with open_backend(node_home) as backend:
        removed = backend.remove_peer(base)
    emit({"url": base, "removed": True, "source": removed.get("source")}, as_json,
         f"removed peer {base}")  # fmt: skip


@cli.group()
def member() -> None:
    """Membership after genesis: votes to admit or remove members."""


@member.group()
def vote() -> None:
    """Sign a membership vote; `threshold` distinct members' votes decide."""


@vote.command("admit")
@home_option
@click.argument("card_file", metavar="CARD", type=click.Path(exists=True, path_type=Path))
@json_option
def vote_admit(home: Path, card_file: Path, as_json: bool) -> None:
    """Vote to admit the member whose CARD file ('hashmesh card' output) is given."""
    c = _read_card(card_file)
    body = VoteBody("admit", c["key"], name=c["name"], role=c["role"])
    with open_backend(NodeHome(home).require()) as backend:
        record = authored(backend.author(body))
    emit(record, as_json, f"voted to admit {body.name!r} ({body.member})\n  vote {record['id']}")


@vote.command("remove")
@home_option
@click.argument("member")
@click.option(
    "--after", type=click.IntRange(min=0), default=None,
    help="The member's last seq that keeps counting (default: its head here).",
)  # fmt: skip
@json_option
def vote_remove(home: Path, member: str, after: int | None, as_json: bool) -> None:
    """Vote to remove MEMBER (its name, any case, or a unique prefix of its key); its
    records after seq --after stop counting."""
    with open_backend(NodeHome(home).require()) as backend:
        found = resolve_member(backend.members(), member)
        key = str(found["key"])
        seq = backend.head_seq(key) if after is None else after
        body = VoteBody("remove", key, after=seq)
        record = authored(backend.author(body))
    emit(
        record, as_json,
        f"voted to remove {found['name']!r} ({key}) after seq {seq}\n  vote {record['id']}",
    )  # fmt: skip


@cli.command()
def demo() -> None:
    """Found a 3-member federation on loopback and show hashmesh end to end (< 1 min)."""
    from node.cli.demo import run_demo  # rich and the demo's helpers load only for the demo

    run_demo(cli)


# ---- commands defined in their own modules: one CLI, one error boundary -------------------
for _command in (
    *cli_signals.COMMANDS, *cli_transfer.COMMANDS, *cli_users.COMMANDS, *cli_audit.COMMANDS,
    *cli_lists.COMMANDS,
    *cli_moderation.COMMANDS,
    *cli_tokens.COMMANDS, *cli_replica.COMMANDS,
):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    """Entry point with the CLI's one error boundary: every failure is one line on stderr,
    ``hashmesh: error: <kind>: <details>``, and exit 2 (a traceback first with --verbose)."""
    tune_for_bulk_records()
    try:
        code = cli.main(prog_name="hashmesh", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.exceptions.NoArgsIsHelpError as e:  # `hashmesh federation`: its help
        click.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        sys.exit(EXIT_ERROR)
    except click.UsageError as e:
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        _fail(f"usage: {e.format_message()}{where}")
    except click.ClickException as e:
        _fail(e.format_message())
    except (NodeError, ProtocolError) as e:
        _fail(explain(e))
    except SystemExit:
        raise
    except Exception as e:
        _fail(f"internal error: {e or repr(e)} (rerun with --verbose for a traceback)")
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _fail(message: str) -> NoReturn:
    """The one error line (after the traceback when --verbose or $HASHMESH_DEBUG asks)."""
    if VERBOSE or os.environ.get("HASHMESH_DEBUG"):
        traceback.print_exc()
    click.echo(f"hashmesh: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _add_verbose(group: click.Group) -> None:
    """Give every command --verbose/-v, so it works after the subcommand too."""
    for command in group.commands.values():
        if not any(p.name == "verbose" for p in command.params):
            command.params.append(verbose_option())
        if isinstance(command, click.Group):
            _add_verbose(command)


_add_verbose(cli)
