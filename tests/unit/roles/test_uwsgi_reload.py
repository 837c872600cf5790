"""Unit tests for roles/uwsgi/files/uwsgi-reload.py, the release-aware reload of a uwsgi vassal.

The tool runs as a real command against real processes: a stand-in vassal master (a Python script whose command
line names uwsgi, like the real one) writes its pidfile, forks its workers in the directory <base>/current
resolves to, and watches its two touch files the way uwsgi does (whole-second modification times): a touched
reload file replaces every worker and logs "reload", a touched chain-reload file logs "chain-reload". Nothing of
the tool is mocked: it reads /proc, touches the files and waits for the new workers for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "uwsgi" / "files" / "uwsgi-reload.py"


@pytest.fixture
def vassal(uwsgi_vassal: dict) -> dict:
    """A running stand-in master and the vassal file that describes it (tests/unit/conftest.py)."""
    return uwsgi_vassal


def reload(vassal: dict, *arguments: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--app",
            "app",
            "--config-dir",
            str(vassal["config"]),
            "--timeout",
            "20",
            *arguments,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def actions(vassal: dict) -> list[str]:
    return vassal["log"].read_text(encoding="utf-8").split() if vassal["log"].exists() else []


def test_a_new_environment_reloads_the_whole_vassal_twice(vassal) -> None:
    """uwsgi re-executes itself with the environment it holds in memory: only the second reload starts with what
    the first one read from the changed file."""
    result = reload(vassal, "--environment")
    assert result["action"] == "reload"
    assert result["reloads"] == 2
    assert result["master"] == vassal["master"]
    assert actions(vassal) == ["reload", "reload"]
    assert len(result["workers"]) == 2


def test_a_full_reload_reloads_once(vassal) -> None:
    result = reload(vassal, "--full")
    assert (result["action"], result["reloads"]) == ("reload", 1)
    assert actions(vassal) == ["reload"]


def test_the_same_venv_takes_a_chain_reload(vassal) -> None:
    vassal["pidfile"].with_suffix(".venv").write_text(vassal["venv"] + "\n", encoding="utf-8")
    result = reload(vassal)
    assert (result["action"], result["reloads"]) == ("chain-reload", 1)
    assert actions(vassal) == ["chain-reload"]


def test_without_a_running_master_nothing_is_reloaded(vassal) -> None:
    vassal["pidfile"].write_text("0\n", encoding="utf-8")
    assert reload(vassal, "--environment")["action"] == "none"
    assert actions(vassal) == []


def test_a_changed_venv_reloads_the_whole_vassal(vassal) -> None:
    # The master's interpreter and sys.path come from the venv it started with: a chain reload cannot change it.
    vassal["pidfile"].with_suffix(".venv").write_text("/srv/app/venvs/old\n", encoding="utf-8")
    result = reload(vassal)
    assert (result["action"], result["reloads"]) == ("reload", 1)
    assert actions(vassal) == ["reload"]
    assert vassal["pidfile"].with_suffix(".venv").read_text(encoding="utf-8") == vassal["venv"] + "\n"


def test_a_pidfile_naming_another_program_is_no_master(vassal) -> None:
    # A master killed hard leaves its pidfile; its pid may since belong to anything else, which is never touched.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{stranger.pid}/cmdline").read_bytes() != b"sleep\x0060\x00":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        vassal["pidfile"].write_text(f"{stranger.pid}\n", encoding="utf-8")
        result = reload(vassal)
        assert result["action"] == "none"
        assert "no running vassal master" in result["reason"]
        assert stranger.poll() is None
        assert actions(vassal) == []
    finally:
        stranger.kill()
        stranger.wait()
