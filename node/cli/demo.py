"""``hashmesh demo``: a three-member federation on loopback, end to end, in seconds.

In a temporary directory the demo runs the same commands an operator would (printed as
``$ hashmesh …``, run in this process; the nodes are real ``hashmesh serve`` processes):

1. found: three node homes, their cards, a genesis drafted, signed by every founder, joined
2. serve: three nodes on free loopback ports, each seeded with the other two
3. add: Alpha contributes the PDQ hash of an image
4. gossip: the signal arrives on Beta and Gamma; Beta confirms it
5. match: Gamma matches an edited copy of the image, with provenance
6. retract: Alpha retracts the signal; the retraction reaches Beta and Gamma
7. audit: on each node every record verifies, every chain links, the pure fold equals the
   stored state, and all three nodes hold the same state
8. stop: the nodes are stopped and the directory removed (also on failure or Ctrl-C)

The image is ``../shared/conformance/pdq/images/aaa-orig.jpg`` next to the repository if it
is there, else a picture drawn with Pillow; the edited copy is made with Pillow (smaller,
blurred, brighter, re-compressed).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from rich.console import Console

from node.cli.backend import LocalApi
from node.errors import NodeError
from node.home import NodeHome
from node.net.client import NodeClient

SHARED_IMAGE = Path(__file__).resolve().parents[2] / "shared/conformance/pdq/images/aaa-orig.jpg"
NAMES = ("Alpha", "Beta", "Gamma")
LABELS = ("entity:demo-group", "behaviour:glorification")
STEPS = 8
READY_TIMEOUT_S = 30.0
PROPAGATION_TIMEOUT_S = 20.0


@dataclass
class DemoNode:
    name: str
    home: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api(self) -> LocalApi:
        return LocalApi.for_home(NodeHome(self.home))

    def log_tail(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float) -> float:
    """Poll condition until it is truthy; the seconds it took, or NodeError naming what."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if condition():
            return time.monotonic() - began
        time.sleep(0.05)
    raise NodeError(f"demo: {what} did not happen within {timeout_s:.0f} s")


@dataclass
class Demo:
    root: Path
    console: Console
    cli: click.Group  # the hashmesh command group the steps run
    nodes: list[DemoNode] = field(default_factory=list)
    signal_id: str = ""

    # -- output and commands -------------------------------------------------------------

    def step(self, number: int, title: str) -> None:
        self.console.print(f"\n[bold cyan][{number}/{STEPS}] {title}[/]", highlight=False)

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)

    def hashmesh(self, *args: str, show: bool = True) -> tuple[int, str]:
        """Run one hashmesh command in this process; print it and its output."""
        shown = " ".join(shlex.quote(a.replace(f"{self.root}/", "")) for a in args)
        if show:
            self.console.print(f"  [green]$ hashmesh {shown}[/]", highlight=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = self.cli.main(list(args), prog_name="hashmesh", standalone_mode=False)
        text = out.getvalue().rstrip().replace(f"{self.root}/", "")
        if show and text:
            self.console.print("\n".join(f"    {line}" for line in text.splitlines()), markup=False,
                               highlight=False)  # fmt: skip
        return (code if isinstance(code, int) else 0), text

    # -- the steps -----------------------------------------------------------------------

    def found(self) -> None:
        self.step(1, "Found a federation: three homes, cards, a genesis every founder signs")
        self.nodes = [DemoNode(n, self.root / n.lower(), free_port()) for n in NAMES]
        for node in self.nodes:
            peers = [a for other in self.nodes if other is not node for a in ("--peer", other.url)]
            self.hashmesh("init", "--home", str(node.home), "--name", node.name,
                          "--listen", f"127.0.0.1:{node.port}", *peers)  # fmt: skip
        cards = []
        for node in self.nodes:
            _, card = self.hashmesh("card", "--home", str(node.home), show=False)
            path = self.root / f"{node.name.lower()}.card.json"
            path.write_text(card + "\n")
            cards.append(str(path))
            self.console.print(f"  [green]$ hashmesh card --home {node.home.name} > {path.name}[/]")
        genesis = str(self.root / "federation.json")
        self.hashmesh("federation", "create", "--name", "Demo federation", "--threshold", "2",
                      *cards, "-o", genesis)  # fmt: skip
        for node in self.nodes:
            self.hashmesh("federation", "sign", "--home", str(node.home), genesis)
        for node in self.nodes:
            self.hashmesh("federation", "join", "--home", str(node.home), genesis)

    def serve(self) -> None:
        self.step(2, "Serve: three nodes on free loopback ports, each seeded with the others")
        began = time.monotonic()
        for node in self.nodes:
            node.process = _start_node(node.home)
            self.say(f"[green]$ hashmesh serve --home {node.home.name}[/]  (pid "
                     f"{node.process.pid}, {node.url})")  # fmt: skip
        for node in self.nodes:
            wait_for(
                f"{node.name} becoming ready", functools.partial(_ready, node), READY_TIMEOUT_S
            )
        self.say(f"all three ready after {time.monotonic() - began:.1f} s")

    def add(self, image: Path) -> None:
        alpha = self.nodes[0]
        self.step(3, f"Add: {alpha.name} contributes the PDQ hash of {image.name}")
        labels = [a for label in LABELS for a in ("--label", label)]
        self.hashmesh("add", "--home", str(alpha.home), "--type", "pdq", *labels, str(image))
        mine = alpha.api.call("GET", "/v1/signals?type=pdq&active=true")["signals"]
        self.signal_id = str(mine[0]["id"])

    def gossip(self) -> None:
        beta, gamma = self.nodes[1], self.nodes[2]
        self.step(4, f"Gossip: the signal arrives on {beta.name} and {gamma.name}")
        for node in (beta, gamma):
            took = wait_for(f"the signal reaching {node.name}",
                            functools.partial(_has_status, node, self.signal_id, "active"),
                            PROPAGATION_TIMEOUT_S)  # fmt: skip
            self.say(f"{node.name} has signal {self.signal_id[:16]}… after {took:.2f} s")
        self.hashmesh("opinion", "--home", str(beta.home), self.signal_id, "confirm")
        wait_for(f"{beta.name}'s opinion reaching {gamma.name}",
                 lambda: _tallies(gamma, self.signal_id).get("confirm") == 1,
                 PROPAGATION_TIMEOUT_S)  # fmt: skip
        self.hashmesh("signals", "--home", str(gamma.home))

    def match(self, edited: Path) -> None:
        gamma = self.nodes[2]
        self.step(5, f"Match: {gamma.name} checks an edited copy (smaller, blurred, brighter)")
        code, _ = self.hashmesh("match", "--home", str(gamma.home), str(edited))
        if code != 0:
            raise NodeError("demo: the edited copy did not match on Gamma")
        self.say("exit status 0: matched, with who listed it, why, and what others think")

    def retract(self, edited: Path) -> None:
        alpha, others = self.nodes[0], self.nodes[1:]
        self.step(6, f"Retract: {alpha.name} withdraws the signal; the retraction propagates")
        self.hashmesh("retract", "--home", str(alpha.home), self.signal_id,
                      "--reason", "demo: listed in error")  # fmt: skip
        for node in others:
            took = wait_for(f"the retraction reaching {node.name}",
                            functools.partial(_has_status, node, self.signal_id, "retracted"),
                            PROPAGATION_TIMEOUT_S)  # fmt: skip
            self.say(f"{node.name} sees it retracted after {took:.2f} s")
        code, _ = self.hashmesh("match", "--home", str(others[-1].home), str(edited))
        if code != 1:
            raise NodeError("demo: the retracted signal still matched on Gamma")
        self.say("exit status 1: no match any more")

    def audit(self) -> None:
        self.step(7, "Audit: every record verified, fold = stored state, all nodes agree")
        wait_for("the three nodes converging", lambda: len(set(self._digests())) == 1,
                 PROPAGATION_TIMEOUT_S)  # fmt: skip
        for node in self.nodes:
            self.say(f"{node.name}: {audit_summary(NodeHome(node.home))}")
        self.say(f"all three nodes hold the same state (digest {self._digests()[0][:16]}…)")

    def _digests(self) -> list[str]:
        return [str(n.api.call("GET", "/v1/status?digest=1")["store"]["state_digest"])
                for n in self.nodes]  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                _stop_node(node.process)
                node.process = None


def audit_summary(home: NodeHome) -> str:
    """Audit a node's database with protocol/ alone (node.audit); NodeError on a violation."""
    from node.audit.engine import CHECKS, audit
    from node.audit.sources import read_database

    snapshot = read_database(home.db_path, home.federation())
    try:
        result = audit(snapshot, now_ms=time.time_ns() // 1_000_000)
    finally:
        snapshot.close()
    if not result.clean:
        first = result.violations[0].to_json()
        raise NodeError(f"demo: {home.path.name}: audit found {len(result.violations)} "
                        f"violation(s), first: {first}")  # fmt: skip
    passed = [check for check in CHECKS if check in result.applicable]
    return f"{result.counts['valid']} records verified, clean ({', '.join(passed)})"


def _start_node(home: Path) -> subprocess.Popen[bytes]:
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    with (home / "serve.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--home", str(home)],
            stdout=log, stderr=subprocess.STDOUT, cwd=home,
            env=os.environ | {"PYTHONPATH": path}, start_new_session=True,
        )  # fmt: skip


def _stop_node(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(node: DemoNode) -> bool:
    if node.process is not None and node.process.poll() is not None:
        raise NodeError(f"demo: {node.name} exited {node.process.returncode}: {node.log_tail()}")
    try:
        NodeClient(node.url, timeout_s=2).call_raw("GET", "/readyz")
    except NodeError:
        return False
    return True


def _signal(node: DemoNode, signal_id: str) -> dict[str, Any] | None:
    try:
        return dict(node.api.call("GET", f"/v1/signals/{signal_id}"))
    except NodeError:
        return None


def _has_status(node: DemoNode, signal_id: str, status: str) -> bool:
    row = _signal(node, signal_id)
    return row is not None and row["status"] == status


def _tallies(node: DemoNode, signal_id: str) -> dict[str, int]:
    row = _signal(node, signal_id)
    return {} if row is None else dict(row["tallies"])


def demo_images(root: Path) -> tuple[Path, Path]:
    """The image to list (the shared conformance image, or a drawn one) and an edited copy."""
    if SHARED_IMAGE.exists():
        original = SHARED_IMAGE
        picture = Image.open(original).convert("RGB")
    else:
        original = root / "original.jpg"
        picture = _draw_picture()
        picture.save(original, "JPEG", quality=90)
    width, height = picture.size
    edited = picture.resize((width * 4 // 5, height * 4 // 5))
    edited = ImageEnhance.Brightness(edited.filter(ImageFilter.GaussianBlur(1.5))).enhance(1.1)
    edited_path = root / f"edited-{original.stem}.jpg"
    edited.save(edited_path, "JPEG", quality=70)
    return original, edited_path


def _draw_picture() -> Image.Image:
    rng = random.Random(7)
    picture = Image.new("RGB", (640, 480), (30, 60, 90))
    draw = ImageDraw.Draw(picture)
    for _ in range(40):
        x, y, r = rng.randrange(640), rng.randrange(480), rng.randrange(10, 120)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=color)
    return picture


@contextlib.contextmanager
def _running(demo: Demo) -> Iterator[Demo]:
    try:
        yield demo
    finally:
        demo.stop()


def run_demo(cli: click.Group, console: Console | None = None) -> None:
    """Run every step of ``cli`` (the hashmesh group); stop the nodes and remove the directory
    whatever happens."""
    console = console or Console(highlight=False, soft_wrap=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hashmesh-demo-") as tmp:
        root = Path(tmp)
        console.print(f"[bold]hashmesh demo[/]: three members on loopback, in {root}")
        with _running(Demo(root, console, cli)) as demo:
            original, edited = demo_images(root)
            demo.found()
            demo.serve()
            demo.add(original)
            demo.gossip()
            demo.match(edited)
            demo.retract(edited)
            demo.audit()
        demo.step(8, "Stop: the three nodes stopped, the temporary directory removed")
    console.print(f"\n[bold green]demo finished in {time.monotonic() - began:.1f} s[/]")
