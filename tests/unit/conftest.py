"""Fixtures shared by the unit tests of the host tools (tests/unit/roles) and of the modules on the same code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# A stand-in uwsgi vassal master: a Python script whose command line names uwsgi, like the real one. It writes its
# pidfile, forks its workers in the directory <base>/current resolves to, and watches its two touch files the way
# uwsgi does (whole-second modification times): a touched reload file replaces every worker and logs "reload", a
# touched chain-reload file logs "chain-reload".
STANDIN = r"""
import os
import signal
import sys
import time

pidfile, reload_file, chain_file, current, count, log = sys.argv[1:7]


def fork_workers():
    workers = []
    for _ in range(int(count)):
        pid = os.fork()
        if pid == 0:
            os.chdir(os.path.realpath(current))
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                time.sleep(1)
        workers.append(pid)
    return workers


def stop(workers):
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    for pid in workers:
        os.waitpid(pid, 0)


def seconds(path):
    return int(os.stat(path).st_mtime)


workers = fork_workers()
seen = {path: seconds(path) for path in (reload_file, chain_file)}
with open(pidfile, "w") as out:
    out.write(f"{os.getpid()}\n")
signal.signal(signal.SIGTERM, lambda *_: (stop(workers), sys.exit(0)))
while True:
    for path, action in ((reload_file, "reload"), (chain_file, "chain-reload")):
        if seconds(path) != seen[path]:
            seen[path] = seconds(path)
            stop(workers)
            workers = fork_workers()
            with open(log, "a") as out:
                out.write(action + "\n")
    time.sleep(0.05)
"""


@pytest.fixture
def uwsgi_vassal(tmp_path: Path) -> Iterator[dict]:
    """A running stand-in master and the vassal file that describes it."""
    release = tmp_path / "releases" / "1"
    (release / ".venv").mkdir(parents=True)
    current = tmp_path / "current"
    current.symlink_to(release)
    run = tmp_path / "run"
    run.mkdir()
    config = tmp_path / "etc"
    (config / "vassals").mkdir(parents=True)
    files = {
        "pidfile": run / "app.pid",
        "reload": tmp_path / "reload",
        "chain": tmp_path / "chain-reload",
        "log": tmp_path / "actions.log",
    }
    for name in ("reload", "chain"):
        files[name].touch()
        os.utime(files[name], (time.time() - 10, time.time() - 10))
    (config / "vassals" / "app.ini").write_text(
        "[uwsgi]\n"
        f"pidfile = {files['pidfile']}\n"
        f"pythonpath = {current}\n"
        "processes = 2\n"
        f"touch-reload = {files['reload']}\n"
        f"touch-chain-reload = {files['chain']}\n"
        "\n[pyweb]\nenv-file = /nonexistent\n",
        encoding="utf-8",
    )
    standin = tmp_path / "uwsgi_standin.py"
    standin.write_text(STANDIN, encoding="utf-8")
    master = subprocess.Popen(
        [
            sys.executable,
            str(standin),
            str(files["pidfile"]),
            str(files["reload"]),
            str(files["chain"]),
            str(current),
            "2",
            str(files["log"]),
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not files["pidfile"].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield {"config": config, "master": master.pid, "release": str(release), "venv": str(release / ".venv"), **files}
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(10)
