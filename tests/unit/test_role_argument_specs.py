"""Every role's meta/argument_specs.yml must describe defaults/main.yml exactly: same keys, same values.

A spec that drifts from the defaults documents one thing and runs another; this test makes the drift a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
_MISSING = object()
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks").is_dir()) if ROLES_DIR.is_dir() else []


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def main_options(role: str) -> dict[str, dict[str, Any]]:
    spec = load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"].get("options") or {}


def role_defaults(role: str) -> dict[str, Any]:
    path = ROLES_DIR / role / "defaults" / "main.yml"
    return (load_yaml(path) or {}) if path.is_file() else {}


def test_every_role_has_an_argument_spec() -> None:
    missing = [role for role in ROLES if not (ROLES_DIR / role / "meta" / "argument_specs.yml").is_file()]
    assert not missing, f"roles without meta/argument_specs.yml: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_all_documented(role: str) -> None:
    undocumented = sorted(set(role_defaults(role)) - set(main_options(role)))
    assert not undocumented, f"{role}: defaults missing from argument_specs: {undocumented}"


@pytest.mark.parametrize("role", ROLES)
def test_optional_spec_options_have_defaults(role: str) -> None:
    options = main_options(role)
    defaults = role_defaults(role)
    without_default = sorted(
        name for name, option in options.items() if not option.get("required", False) and name not in defaults
    )
    assert not without_default, f"{role}: optional options with no value in defaults/main.yml: {without_default}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_role_defaults(role: str) -> None:
    options = main_options(role)
    defaults = role_defaults(role)
    different = {
        name: (options[name].get("default", "<no default in spec>"), defaults[name])
        for name in sorted(set(options) & set(defaults))
        if options[name].get("default", _MISSING) != defaults[name]
    }
    assert not different, f"{role}: spec default != defaults/main.yml value: {different}"


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_carry_the_role_prefix(role: str) -> None:
    unprefixed = sorted(name for name in main_options(role) if not name.startswith(f"{role}_"))
    assert not unprefixed, f"{role}: options without the '{role}_' prefix: {unprefixed}"


@pytest.mark.parametrize("role", ROLES)
def test_min_ansible_version_is_the_collections(role: str) -> None:
    """A role may not claim an ansible-core older than the collection supports (meta/runtime.yml)."""
    runtime = load_yaml(ROLES_DIR.parent / "meta" / "runtime.yml")
    lowest = runtime["requires_ansible"].removeprefix(">=").removesuffix(".0")
    galaxy_info = load_yaml(ROLES_DIR / role / "meta" / "main.yml")["galaxy_info"]
    assert str(galaxy_info["min_ansible_version"]) == lowest, "meta/main.yml min_ansible_version != meta/runtime.yml"
