"""`hashmesh demo` (what `make demo` runs): exits 0 within a minute, shows every step, cleans up."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import REPO

pytestmark = pytest.mark.slow

EXPECTED = (
    "[1/8] Found a federation",
    "$ hashmesh federation join --home gamma federation.json",
    "[2/8] Serve: three nodes",
    "all three ready after",
    "[3/8] Add: Alpha contributes the PDQ hash of",
    "added pdq ",
    "[4/8] Gossip: the signal arrives on Beta and Gamma",
    "Beta has signal ",
    "Gamma has signal ",
    "$ hashmesh opinion --home beta ",
    "[5/8] Match: Gamma checks an edited copy",
    "1 match(es)",
    "from Alpha  labels behaviour:glorification entity:demo-group  confirm 1 dispute 0 seen 0",
    "exit status 0: matched",
    "[6/8] Retract: Alpha withdraws the signal",
    "Beta sees it retracted after",
    "Gamma sees it retracted after",
    "exit status 1: no match any more",
    "[7/8] Audit:",
    "Alpha: ",
    "records verified, clean",
    "all three nodes hold the same state",
    "[8/8] Stop: the three nodes stopped, the temporary directory removed",
    "demo finished in",
)


def test_demo_shows_every_step_and_cleans_up() -> None:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "node", "demo"],
        capture_output=True, text=True, cwd=REPO, timeout=90, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60
    at = 0
    for line in EXPECTED:  # each step's lines, in order
        found = result.stdout.find(line, at)
        assert found >= 0, f"missing after position {at}: {line!r}\n{result.stdout}"
        at = found
    directory = re.search(r"in (\S+hashmesh-demo-\S+)", result.stdout)
    assert directory is not None and not Path(directory[1]).exists()
    assert "Traceback" not in result.stderr
