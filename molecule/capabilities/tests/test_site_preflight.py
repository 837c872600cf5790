"""The site playbook's preflight on a fresh host: bad settings are refused before anything changes, and check mode
either works or stops at once saying what to install.

The host stays fresh (converge runs only the preflight): each run here puts it in every group of the stack with the
Django Channels example's settings (examples/django_channels), as the README allows, then offers one bad value.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
SITE = PROJECT / "site.yml"
EXAMPLE_SETTINGS = PROJECT / "examples" / "django_channels" / "inventory" / "group_vars" / "all.yml"
GROUPS = ["pyweb_web", "pyweb_app", "pyweb_workers", "pyweb_redis"]
# The example has no workers; with the host in pyweb_workers as well, celery needs these.
CELERY = {"celery_app_name": "chatapp", "celery_app_module": "chatsite"}
ON_TRIXIE = os.environ.get("PYWEB_TEST_DISTRO", "bookworm") == "trixie"
# Ansible's apt module needs apt_pkg (python3-apt) in check mode; hiding it is how a minimal host looks.
APT_PKG_GLOB = "/usr/lib/python3/dist-packages/apt_pkg*.so"


def every_group(directory: Path, settings: Path) -> Path:
    """The molecule host in every group of the stack, with the given settings as its group_vars/all.yml."""
    molecule_inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text(encoding="utf-8"))
    hosts = {name: {} for name in molecule_inventory["all"]["hosts"]}
    (directory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {group: {"hosts": hosts} for group in GROUPS}}}), encoding="utf-8"
    )
    (directory / "group_vars").mkdir()
    shutil.copy(settings, directory / "group_vars" / "all.yml")
    return directory / "hosts.yml"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return every_group(tmp_path_factory.mktemp("example"), EXAMPLE_SETTINGS)


@pytest.fixture(scope="module")
def readme_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """README "Using it on your hosts": the checkout's inventory with only the hosts filled in."""
    return every_group(tmp_path_factory.mktemp("readme"), PROJECT / "inventory" / "group_vars" / "all.yml")


def run_site(inventory: Path, *arguments: str, extra: dict | None = None) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "--inventory",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--inventory",
        str(inventory),
        *arguments,
        *(["--extra-vars", json.dumps(extra)] if extra is not None else []),
        str(SITE),
    ]
    environment = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=900, env=environment)


def recap_changed(output: str) -> list[int]:
    return [int(count) for count in re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", output, re.M)]


def failure_text(result: subprocess.CompletedProcess) -> str:
    """What the failed task said, on one line (the callback wraps long messages)."""
    output = result.stdout + result.stderr
    start = output.find("fatal:")
    return " ".join((output[start:] if start >= 0 else output).split()) + " " + " ".join(result.stderr.split())


def assert_host_untouched(host) -> None:
    for package in ("redis-server", "supervisor", "nginx", "uwsgi-core", "firewalld"):
        assert not host.package(package).is_installed, f"{package} was installed"
    assert not host.file("/srv/chatapp").exists
    assert not host.user("chatapp").exists


BAD_SETTINGS = {
    # The README's first run with only the hosts filled in: the example has no workers, so nothing names the celery app.
    "missing celery app": ({}, "celery_app_name"),
    "firewalld rich rule with an invalid source": (
        {
            **CELERY,
            "pyweb_firewalld_enabled": True,
            "firewalld_rich_rules": ['rule family="ipv4" source address="10.0.0.300/8" service name="ssh" accept'],
        },
        "firewalld_rich_rules",
    ),
    "world-writable uwsgi socket": (
        {**CELERY, "uwsgi_extra_options": [{"name": "chmod-socket", "value": "666"}]},
        "uwsgi_extra_options",
    ),
    "uwsgi vassal as another user": (
        {**CELERY, "uwsgi_extra_options": [{"name": "uid", "value": "root"}]},
        "uwsgi_extra_options",
    ),
    "missing app interpreter": ({**CELERY, "app_python": "/usr/bin/python3.99"}, "app_python"),
    "invalid gunicorn program name": (
        {**CELERY, "pyweb_app_server": "gunicorn", "gunicorn_program_name": "chat app:web"},
        "gunicorn_program_name",
    ),
}


@pytest.mark.parametrize(("extra", "variable"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_setting_is_refused_before_anything_changes(host, inventory: Path, extra: dict, variable: str) -> None:
    result = run_site(inventory, extra=extra)
    output = result.stdout[-3000:] + result.stderr[-2000:]

    assert result.returncode != 0, output
    assert variable in failure_text(result), output
    assert "Nothing was changed" in failure_text(result), output
    assert recap_changed(result.stdout) == [0], output
    assert "TASK [Gathering Facts]" not in result.stdout, "a play after the preflight started"
    assert_host_untouched(host)


@pytest.mark.parametrize(
    ("extra", "variable"), [({}, "celery_app_name"), (CELERY, "app_source_dir")], ids=["no settings", "no app source"]
)
def test_readme_inventory_with_only_the_hosts_changes_nothing(
    host, readme_inventory: Path, extra: dict, variable: str
) -> None:
    result = run_site(readme_inventory, extra=extra)

    assert result.returncode != 0, result.stdout[-3000:]
    assert variable in failure_text(result), result.stdout[-3000:]
    assert "Nothing was changed" in failure_text(result)
    assert recap_changed(result.stdout) == [0], result.stdout[-3000:]
    assert_host_untouched(host)


def test_check_mode_without_package_lists_stops_at_once_saying_what_to_run(host, inventory: Path) -> None:
    if host.run("ls /var/lib/apt/lists/*_Packages*").rc == 0:
        pytest.skip("the package lists exist already (an earlier run made them)")
    result = run_site(inventory, "--check", extra=CELERY)

    assert result.returncode != 0, result.stdout[-3000:]
    assert "apt-get update" in failure_text(result), result.stdout[-3000:]
    assert recap_changed(result.stdout) == [0], result.stdout[-3000:]


def test_check_mode_without_python3_apt_stops_at_once_naming_it(host, inventory: Path) -> None:
    hidden = host.run(f"for f in {APT_PKG_GLOB}; do mv $f $f.hidden; done")
    assert hidden.rc == 0, hidden.stderr
    try:
        assert host.run("python3 -c 'import apt_pkg'").rc != 0
        result = run_site(inventory, "--check", extra=CELERY)
    finally:
        host.run(f"for f in {APT_PKG_GLOB}.hidden; do mv $f ${{f%.hidden}}; done")

    assert result.returncode != 0, result.stdout[-3000:]
    assert "apt-get install python3-apt" in failure_text(result), result.stdout[-3000:]
    assert "run once without --check" in failure_text(result)
    assert recap_changed(result.stdout) == [0], result.stdout[-3000:]
    assert host.run("python3 -c 'import apt_pkg'").rc == 0


@pytest.mark.skipif(ON_TRIXIE, reason="a whole check-mode run of the stack takes minutes: bookworm covers it")
def test_check_mode_of_the_whole_example_stack_works_on_a_fresh_host(host, inventory: Path) -> None:
    updated = host.run("apt-get update -qq")
    assert updated.rc == 0, updated.stderr

    result = run_site(inventory, "--check", extra=CELERY)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "fatal:" not in result.stdout
    assert_host_untouched(host)
