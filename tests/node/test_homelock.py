"""The home lock (node.homelock): one holder at a time, named in refusals, gone with its holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO

from node.homelock import LOCK_FILE, SERVE, HomeBusyError, HomeLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with HomeLock.acquire(tmp_path, SERVE) as lock:
        assert lock.held
        with pytest.raises(HomeBusyError) as refused:
            HomeLock.acquire(tmp_path, "import")
        assert refused.value.holder.pid == os.getpid()
        assert f"a node is already running (pid {os.getpid()})" in str(refused.value)
        assert refused.value.status == 409
    assert not lock.held
    assert (tmp_path / LOCK_FILE).read_bytes() == b""  # no stale pid once released
    busy = r"'hashmesh member vote admit' \(pid \d+\)"
    with HomeLock.acquire(tmp_path, "member vote admit"), pytest.raises(HomeBusyError, match=busy):
        HomeLock.acquire(tmp_path, SERVE)


def test_the_lock_goes_with_its_holder_killed(tmp_path: Path) -> None:
    """kill -9 (or the OOM killer) never leaves a home locked: the kernel drops the lock."""
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; from node.homelock import HomeLock; "
         "HomeLock.acquire(sys.argv[1], 'serve'); print('locked', flush=True); input()",
         str(tmp_path)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with pytest.raises(HomeBusyError) as refused:
                HomeLock.acquire(tmp_path, SERVE)
            assert refused.value.holder.pid == holder.pid
            written = json.loads((tmp_path / LOCK_FILE).read_text())
            assert written == {"pid": holder.pid, "command": "serve"}
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    with HomeLock.acquire(tmp_path, SERVE):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
