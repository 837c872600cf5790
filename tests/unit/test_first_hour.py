"""A new user's first hour: what the README tells them to run exists, the example inventories parse, the demo host
is the shared test host published on loopback only, test hosts have valid names, molecule prints no CRITICAL line
in a good run, and `make clean` knows the wheelhouse cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("pyweb_web", "pyweb_app", "pyweb_workers", "pyweb_redis")
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens (no `_`), at most 63 each.
HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(ROOT / ".venv" / "bin"))
    if not found:
        pytest.skip(f"{name} is not installed (make venv)")
    return found


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **(env or {})}
    return subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False)


def inventory(path: str) -> dict[str, Any]:
    result = run(tool("ansible-inventory"), "--list", "-i", path)
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_real_host_example_inventory_parses() -> None:
    listed = inventory("inventory/hosts.example.yml")
    hosts = {host for group in GROUPS for host in listed[group]["hosts"]}
    assert hosts, "the example puts a host in the stack's groups"
    for host in hosts:
        hostvars = listed["_meta"]["hostvars"][host]
        assert hostvars["ansible_host"]
        assert hostvars["ansible_user"] != "root"
        assert hostvars["ansible_ssh_private_key_file"]
        assert hostvars["ansible_become"] is True
        # The site-wide settings of inventory/group_vars/all.yml reach it, as they do from inventory/hosts.yml.
        assert hostvars["pyweb_firewalld_enabled"] is True


def test_the_shipped_inventory_stays_the_one_ansible_cfg_names() -> None:
    assert "inventory = ./inventory/hosts.yml" in (ROOT / "ansible.cfg").read_text(encoding="utf-8")
    assert "host_key_checking = true" in (ROOT / "ansible.cfg").read_text(encoding="utf-8")


def test_the_demo_inventory_enables_firewalld_as_a_real_deploy_does() -> None:
    listed = inventory("examples/flask_spa/inventory/demo.yml")
    hostvars = listed["_meta"]["hostvars"]["pyweb-demo-bookworm"]
    assert hostvars["pyweb_firewalld_enabled"] is True
    assert hostvars["app_name"] == "flaskapp"  # the example's group_vars/all.yml beside it are read too


# `make` commands the README names that are not this Makefile's: CPython's, in pyweb.stack.python_build's row.
FOREIGN_MAKE_TARGETS = {"altinstall"}


def readme_make_targets() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", text)) - FOREIGN_MAKE_TARGETS


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE))


def test_every_make_target_the_readme_names_exists() -> None:
    named = readme_make_targets()
    assert {"demo", "demo-destroy", "clean", "venv"} <= named
    assert named <= makefile_targets(), f"README.md names missing make targets: {sorted(named - makefile_targets())}"


def test_make_demo_builds_only_the_image_it_runs() -> None:
    result = run("make", "-n", "demo")
    assert result.returncode == 0, result.stderr
    builds = re.findall(r"build-image\.sh\s+(\S+)", result.stdout)
    assert builds == ["bookworm"], result.stdout
    assert "molecule create -s demo" in result.stdout


def shared_platform() -> dict[str, Any]:
    return load_yaml(ROOT / ".config" / "molecule" / "config.yml")["platforms"][0]


def test_the_demo_host_is_the_shared_test_host_published_on_loopback() -> None:
    platforms = load_yaml(ROOT / "molecule" / "demo" / "molecule.yml")["platforms"]
    assert len(platforms) == 1
    demo = dict(platforms[0])
    published = demo.pop("published_ports")
    demo.pop("hostname")
    shared = shared_platform()
    shared.pop("hostname")
    assert demo == shared, "molecule/demo/molecule.yml's platform drifted from .config/molecule/config.yml's"
    container_ports = {entry.rsplit(":", 1)[1] for entry in published}
    assert container_ports == {"443", "80", "9443"}
    assert all(entry.startswith("127.0.0.1:") for entry in published), published


def interpolate(value: str, scenario: str) -> str:
    """Molecule's interpolation of ${NAME} and ${NAME:-default}, for the variables a scenario sees."""
    known = {"MOLECULE_SCENARIO_NAME": scenario, "PYWEB_TEST_DISTRO": "bookworm"}

    def resolve(match: re.Match[str]) -> str:
        name, _separator, default = match.group(1).partition(":-")
        return known.get(name, default)

    return re.sub(r"\$\{([^}]+)\}", resolve, value)


SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_test_hosts_get_valid_hostnames(scenario: str) -> None:
    platforms = load_yaml(ROOT / "molecule" / scenario / "molecule.yml").get("platforms", [shared_platform()])
    for platform in platforms:
        hostname = interpolate(str(platform.get("hostname", platform["name"])), scenario)
        assert HOSTNAME.match(hostname), f"{scenario}: {hostname!r} is not a valid host name"


def test_molecule_prints_no_critical_line_in_a_good_run() -> None:
    # Molecule looks for a `default` scenario before every run and logs CRITICAL when there is none.
    result = run(tool("molecule"), "cleanup", "-s", "demo", env={"NO_COLOR": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "CRITICAL" not in output, output


def test_make_clean_removes_the_wheelhouse_cache_and_only_it(tmp_path: Path) -> None:
    default = load_yaml(ROOT / "roles" / "app" / "defaults" / "main.yml")["app_wheelhouse_controller_dir"]
    per_app = "/{{ app_name }}"
    assert default.startswith("{{ lookup('ansible.builtin.env', 'HOME') }}/"), default
    assert default.endswith(per_app), default
    cache = default.replace("{{ lookup('ansible.builtin.env', 'HOME') }}", str(tmp_path))[: -len(per_app)]
    assert cache == f"{tmp_path}/.cache/pyweb.stack/wheelhouse"
    result = run("make", "-n", "clean", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    removed = [word for line in result.stdout.splitlines() if line.startswith("rm ") for word in line.split()[2:]]
    assert cache in removed, result.stdout
    assert not [path for path in removed if path.startswith(str(tmp_path)) and path != cache], result.stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "~/.cache/pyweb.stack/wheelhouse" in readme
    assert "app_wheelhouse_controller_dir" in readme


def demo_check() -> Any:
    spec = importlib.util.spec_from_file_location("demo_check", ROOT / "scripts" / "demo-check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_check_reaches_the_demo_through_the_loopback_binding() -> None:
    module = demo_check()
    inspect = {"NetworkSettings": {"Ports": {"443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8443"}]}}}
    assert module.published(inspect, "443/tcp") == ("127.0.0.1", 8443)


@pytest.mark.parametrize(
    "bindings",
    [
        None,
        [],
        [{"HostIp": "0.0.0.0", "HostPort": "8443"}],
        [{"HostIp": "", "HostPort": "8443"}],
        [{"HostIp": "127.0.0.1", "HostPort": "8443"}, {"HostIp": "::", "HostPort": "8443"}],
    ],
)
def test_demo_check_refuses_a_port_not_published_on_loopback_only(bindings: list[dict[str, str]] | None) -> None:
    module = demo_check()
    with pytest.raises(module.Unexpected):
        module.published({"NetworkSettings": {"Ports": {"443/tcp": bindings}}}, "443/tcp")
