"""Settings a user changes (app scenario): the wheelhouse follows the host's interpreter, an sdist-only requirement
is built into a wheel on the host, source builds without their build packages are refused before the build,
gevent blockers are warned about, and bools pass as -e strings. side_effect_settings.yml records its runs in
/root/pyweb-app-settings.json."""

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
    # With the wheelhouse too: its fallback would build psycopg2 on the host, without the packages it needs.
    assert any("psycopg2-binary" in line for line in record["wheelhouse_refusal"])
    assert any("app_system_packages" in line for line in record["wheelhouse_refusal"])
    assert any("app_system_packages" in line for line in record["build_packages_refusal"])
    assert record["release_after_refused"] == record["release_before"]


def test_an_sdist_only_requirement_was_built_on_the_host_into_the_wheelhouse(host, record) -> None:
    # docopt 0.6.2 has no wheel on PyPI: the venv got it from the shipped wheelhouse, which holds no sdist.
    assert record["docopt_version"] == "0.6.2"
    shipped = record["docopt_host_wheelhouse"]
    (wheel,) = (path.rsplit("/", 1)[1] for path in shipped)
    assert wheel.startswith("docopt-0.6.2-"), shipped
    assert wheel.endswith("-none-any.whl"), shipped
    # The wheel the host built is the one the controller's cache got back, and the one the host installed from.
    (key,) = {path.split("/")[-2] for path in shipped}
    built = host.file(f"{BASE}/cache/wheel-build/{key}/out/{wheel}")
    assert built.exists, "no wheel was built on the host"
    assert built.sha256sum == record["docopt_cached_sha256"] == host.file(shipped[0]).sha256sum
    assert [path.split("/")[-2] for path in record["docopt_cached_wheels"]] == [key]
    # Built by the app user, from the sdist shipped with setuptools and wheel for the host's interpreter.
    assert host.file(f"{BASE}/cache/wheel-build/{key}/work/venv").user == "flaskapp"
    sources = host.check_output(f"ls {BASE}/cache/wheel-build/{key}/src").split()
    assert "docopt-0.6.2.tar.gz" in sources
    assert any(name.startswith("setuptools-") and name.endswith(".whl") for name in sources), sources


def test_the_sdist_build_reran_with_nothing_changed(record) -> None:
    assert len(record["gevent_again_recap"]) == 1
    assert "changed=0 " in record["gevent_again_recap"][0]


def test_gevent_blocker_is_warned_about_and_deployed(record) -> None:
    assert record["gevent_warning"], "no gevent warning in the deploy's output"
    assert record["release_after_gevent"] != record["release_before"]


def test_every_bool_option_was_passed_as_a_string(record) -> None:
    passed = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in record["bool_args"] if "=" in arg}
    assert {"app_wheelhouse_enabled", "app_force_release", "gunicorn_dev_mode", "gunicorn_reload"} <= set(passed)
    assert set(passed.values()) <= {"true", "false"}
