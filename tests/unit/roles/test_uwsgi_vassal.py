"""Unit tests for roles/uwsgi/files/uwsgi-vassal.py, the launcher the uwsgi emperor starts every vassal through.

The launcher runs as a real command and really execs: the "uwsgi binary" it is given is a stand-in Python script
that prints the arguments and the environment it was executed with, as the kernel handed them over
(/proc/self/environ), so what is checked is the exec-time environment a real vassal master would get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "uwsgi" / "files" / "uwsgi-vassal.py"

STANDIN = """#!{python}
import json
import sys
from pathlib import Path

raw = Path("/proc/self/environ").read_bytes()
environ = dict(item.split("=", 1) for item in raw.decode("utf-8", "surrogateescape").split("\\0") if "=" in item)
print(json.dumps({{"argv": sys.argv[1:], "environ": environ}}))
"""


@pytest.fixture
def uwsgi(tmp_path: Path) -> Path:
    binary = tmp_path / "uwsgi-core"
    binary.write_text(STANDIN.format(python=sys.executable), encoding="utf-8")
    binary.chmod(0o755)
    return binary


def vassal(tmp_path: Path, env_file: Path | None) -> Path:
    path = tmp_path / "app.ini"
    text = "[uwsgi]\nstrict = true\nmaster = true\n"
    if env_file is not None:
        text += f"\n; read by the launcher only\n[pyweb]\nenv-file = {env_file}\n"
    path.write_text(text, encoding="utf-8")
    return path


def launch(uwsgi: Path, ini: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYWEB_UWSGI_BINARY": str(uwsgi), "UWSGI_EMPEROR_FD": "3", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--ini", str(ini)], capture_output=True, text=True, env=env, check=False
    )


def started(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_values_reach_the_exec_time_environment_exactly_as_written(tmp_path, uwsgi) -> None:
    """Over the inherited environment (what the emperor's unit set stays: uwsgi finds its emperor by it)."""
    env_file = tmp_path / ".env"
    env_file.write_bytes(
        b"# a comment\n\nSECRET_KEY=s3cr=t with spaces\nQUOTED='kept' \"as is\"\n"
        b"DOLLAR=$HOME\nCR=value\r\nLAST=no-newline"
    )
    run = started(launch(uwsgi, vassal(tmp_path, env_file)))
    environ = run["environ"]
    assert environ["SECRET_KEY"] == "s3cr=t with spaces"
    assert environ["QUOTED"] == "'kept' \"as is\""
    assert environ["DOLLAR"] == "$HOME"
    assert environ["CR"] == "value\r"
    assert environ["LAST"] == "no-newline"
    assert "# a comment" not in "".join(environ)
    # What the emperor set stays, so uwsgi still finds its emperor.
    assert environ["UWSGI_EMPEROR_FD"] == "3"
    assert environ["PATH"] == "/usr/bin:/bin"


def test_the_vassal_gets_its_arguments_unchanged(tmp_path, uwsgi) -> None:
    ini = vassal(tmp_path, None)
    assert started(launch(uwsgi, ini))["argv"] == ["--ini", str(ini)]


def test_a_vassal_without_an_environment_file_starts_with_the_inherited_environment(tmp_path, uwsgi) -> None:
    environ = started(launch(uwsgi, vassal(tmp_path, None), {"LANG": "C.UTF-8"}))["environ"]
    assert environ["LANG"] == "C.UTF-8"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("UWSGI_CHMOD_SOCKET=666\n", "UWSGI_CHMOD_SOCKET is reserved"),
        ("uwsgi_master=false\n", "uwsgi_master is reserved"),
        ("PYWEB_UWSGI_BINARY=/tmp/hidden-value\n", "PYWEB_UWSGI_BINARY is reserved"),
        ("GOOD=1\n  SPACED=hidden-value\n", "line 2: not a KEY=VALUE line"),
        ("1ST=hidden-value\n", "line 1: not a KEY=VALUE line"),
    ],
)
def test_an_unusable_line_stops_the_start_without_showing_its_value(tmp_path, uwsgi, content, reason) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(content, encoding="utf-8")
    result = launch(uwsgi, vassal(tmp_path, env_file))
    assert result.returncode == 78
    assert reason in result.stderr
    assert "hidden-value" not in result.stderr
    assert "666" not in result.stderr
    assert result.stdout == ""  # uwsgi never ran


def test_an_unreadable_environment_file_stops_the_start(tmp_path, uwsgi) -> None:
    result = launch(uwsgi, vassal(tmp_path, tmp_path / "missing.env"))
    assert result.returncode == 78
    assert "cannot read the environment file" in result.stderr


def test_without_the_binary_named_the_launcher_says_where_it_is_set(tmp_path, uwsgi) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--ini", str(vassal(tmp_path, None))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 78
    assert "PYWEB_UWSGI_BINARY is not set" in result.stderr


def test_a_binary_that_cannot_be_executed_exits_127(tmp_path) -> None:
    result = launch(tmp_path / "no-uwsgi", vassal(tmp_path, None))
    assert result.returncode == 127
    assert "cannot execute" in result.stderr


def test_the_launcher_never_puts_values_on_its_command_line(tmp_path, uwsgi) -> None:
    """The argv the uwsgi binary gets is the emperor's, and the launcher itself takes no value as an argument."""
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET_KEY=never-on-argv\n", encoding="utf-8")
    run = started(launch(uwsgi, vassal(tmp_path, env_file)))
    assert "never-on-argv" not in json.dumps(run["argv"])
    assert os.access(SCRIPT, os.R_OK)


def test_the_uwsgi_section_may_repeat_keys_and_hold_placeholders(tmp_path, uwsgi) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\n", encoding="utf-8")
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nenv = X=1\nenv = Y=2\nchdir = %(_)\n\n[pyweb]\nenv-file = {env_file}\n", encoding="utf-8")
    assert started(launch(uwsgi, ini))["environ"]["A"] == "1"
