# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one pip install command line and the wheelhouse choice, on real directories."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

from ansible_collections.pyweb.stack.plugins.module_utils import _pip


def test_offline_from_a_wheelhouse_names_no_index() -> None:
    sources = _pip.PipSources(
        wheelhouse="/srv/app/wheelhouse/3.11.2-cp311-x86_64-0123456789ab",
        index_url="https://pypi.example/simple",
        extra_index_urls=["https://extra.example/simple"],
        trusted_hosts=["pypi.example"],
        ca_bundle="/ca.pem",
    )
    argv = _pip.pip_install_argv("/v/bin/python", sources, requirements=["/r.txt"])
    assert argv == [
        "/v/bin/python", "-m", "pip", "--disable-pip-version-check", "--no-input", "install",
        "--no-index", "--find-links", "/srv/app/wheelhouse/3.11.2-cp311-x86_64-0123456789ab",
        "--trusted-host", "pypi.example", "--cert", "/ca.pem", "--requirement", "/r.txt",
    ]  # fmt: skip


def test_online_from_the_configured_indexes() -> None:
    argv = _pip.pip_install_argv(
        "py",
        _pip.PipSources(index_url="https://idx/simple", extra_index_urls=["https://a/simple", "https://b/simple"]),
        requirements=["/r1.txt", "/r2.txt"],
        packages=["gunicorn==23.0.0"],
        constraints="/c.txt",
        install_options=["--no-cache-dir"],
    )
    assert argv[5:] == [
        "install", "--no-cache-dir", "--index-url", "https://idx/simple",
        "--extra-index-url", "https://a/simple", "--extra-index-url", "https://b/simple",
        "--constraint", "/c.txt", "--requirement", "/r1.txt", "--requirement", "/r2.txt", "gunicorn==23.0.0",
    ]  # fmt: skip


def test_nothing_configured_is_plain_pip_install() -> None:
    assert _pip.pip_install_argv("py", _pip.PipSources(), packages=["a"]) == [*_pip.pip_base_argv("py"), "install", "a"]


def make_wheelhouse(base: Path, name: str, wheels: int = 1, mtime: float | None = None) -> Path:
    directory = base / "wheelhouse" / name
    directory.mkdir(parents=True)
    for number in range(wheels):
        wheel = directory / f"pkg{number}-1.0-py3-none-any.whl"
        wheel.write_bytes(b"")
        if mtime is not None:
            os.utime(wheel, (mtime, mtime))
    return directory


def test_the_wheelhouse_of_this_interpreter_is_chosen(tmp_path: Path) -> None:
    mine = make_wheelhouse(tmp_path, "3.11.2-cp311-x86_64-0123456789ab")
    make_wheelhouse(tmp_path, "3.13.5-cp313-x86_64-ba9876543210")
    make_wheelhouse(tmp_path, "3.11.2-cp311-aarch64-0123456789ab")
    make_wheelhouse(tmp_path, "3.11.2-cp311t-x86_64-0123456789ab")
    assert _pip.wheelhouse_dir(tmp_path, "3.11.2", "cp311", "x86_64") == mine


def test_a_stale_wheelhouse_never_wins(tmp_path: Path) -> None:
    """The old <X.Y.Z> naming, and an older target's directory, stay behind on hosts; the last shipped counts."""
    make_wheelhouse(tmp_path, "3.11.2", mtime=4_000_000_000)  # even newer: the old naming never counts
    make_wheelhouse(tmp_path, "3.11.2-cp311-x86_64-aaaaaaaaaaaa", mtime=1_000_000_000)
    shipped_last = make_wheelhouse(tmp_path, "3.11.2-cp311-x86_64-bbbbbbbbbbbb", mtime=2_000_000_000)
    assert _pip.wheelhouse_dir(tmp_path, "3.11.2", "cp311", "x86_64") == shipped_last


def test_a_wheelhouse_without_wheels_does_not_count(tmp_path: Path) -> None:
    assert _pip.wheelhouse_dir(tmp_path, "3.11.2", "cp311", "x86_64") is None  # no wheelhouse/ at all
    make_wheelhouse(tmp_path, "3.11.2-cp311-x86_64-0123456789ab", wheels=0)
    assert _pip.wheelhouse_dir(tmp_path, "3.11.2", "cp311", "x86_64") is None


def test_the_interpreter_script_matches_this_interpreter() -> None:
    output = subprocess.run(
        [sys.executable, "-c", _pip.INTERPRETER_TAGS_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    tags = json.loads(output)
    assert tags["version"] == platform.python_version()
    assert tags["machine"] == platform.machine()
    gil = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    assert tags["abi"] == f"cp{sys.version_info[0]}{sys.version_info[1]}{gil}"
