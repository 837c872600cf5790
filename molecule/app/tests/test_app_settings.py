"""Settings a user changes (app scenario): the wheelhouse follows the host's interpreter, requirements that build
from source are refused before the build, gevent blockers are warned about, and bools pass as -e strings.
side_effect_settings.yml records its runs in /root/pyweb-app-settings.json."""

from __future__ import annotations

import json

import pytest

BASE = "/srv/flaskapp"
RECORD = "/root/pyweb-app-settings.json"


@pytest.fixture
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


def host_python(host) -> tuple[int, int, int]:
    out = host.check_output("/usr/bin/python3 -c 'import sys; print(*sys.version_info[:3])'")
    major, minor, micro = (int(part) for part in out.split())
    return major, minor, micro


def test_a_marker_for_the_hosts_python_decides_what_the_venv_gets(host) -> None:
    # examples/flask_spa needs async-timeout only below 3.11.3 (Debian 12: 3.11.2, Debian 13: 3.13); the controller
    # runs another Python, so only markers evaluated for the host's interpreter get this right.
    wanted = host_python(host) < (3, 11, 3)
    imported = host.run(f"{BASE}/current/.venv/bin/python -c 'import async_timeout'")
    assert (imported.rc == 0) is wanted, imported.stderr
    wheels = host.check_output(f"find {BASE}/wheelhouse -name 'async_timeout-*.whl'")
    assert bool(wheels.strip()) is wanted


def test_the_wheelhouse_is_named_after_the_hosts_interpreter(host) -> None:
    major, minor, micro = host_python(host)
    names = host.check_output(f"ls {BASE}/wheelhouse").split()
    assert any(name.startswith(f"{major}.{minor}.{micro}-cp{major}{minor}-x86_64-") for name in names), names


def test_source_builds_are_refused_before_anything_changes(record) -> None:
    assert any("psycopg2-binary" in line for line in record["wheelhouse_refusal"])
    assert any("app_system_packages" in line for line in record["build_packages_refusal"])
    assert record["release_after_refused"] == record["release_before"]


def test_gevent_blocker_is_warned_about_and_deployed(record) -> None:
    assert record["gevent_warning"], "no gevent warning in the deploy's output"
    assert record["release_after_gevent"] != record["release_before"]


def test_every_bool_option_was_passed_as_a_string(record) -> None:
    passed = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in record["bool_args"] if "=" in arg}
    assert {"app_wheelhouse_enabled", "app_force_release", "gunicorn_dev_mode", "gunicorn_reload"} <= set(passed)
    assert set(passed.values()) <= {"true", "false"}
