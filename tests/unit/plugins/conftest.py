# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures the release lock's tests share: another real process holding a lock, and a bounded poll."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

COLLECTIONS = str(Path(__file__).resolve().parents[3] / ".cache" / "collections")


@pytest.fixture
def lock_elsewhere() -> Iterator[Callable[[Path, str], subprocess.Popen]]:
    """Starts another process that holds a lock file with hold(), the push runner's way, until its stdin closes;
    returns once it holds the lock. Every one started is gone after the test."""
    started: list[subprocess.Popen] = []

    def start(path: Path, owner: str) -> subprocess.Popen:
        code = f"""
            import sys
            from ansible_collections.pyweb.stack.plugins.module_utils._lock import hold
            with hold({str(path)!r}, 5, {owner!r}):
                print("held", flush=True)
                sys.stdin.read()
            """
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env={**os.environ, "PYTHONPATH": COLLECTIONS},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.fixture
def eventually() -> Callable[[Callable[[], bool]], bool]:
    """Polls a check for up to 15 s (a bounded wait, not a timing assert)."""

    def poll(check: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return check()

    return poll
