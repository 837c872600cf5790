"""Roles meet through published facts, never by reading each other's variables.

pyweb.stack.app publishes app_release_facts and each app server <server>_server_facts; the site playbook passes
them on. A default (defaults/main.yml or vars/main.yml) or a task that reads another role's variable couples the
two roles behind the user's back: the value then depends on which roles happen to share a play. This test finds
every Jinja name of the form <other role>_<...> in a role's defaults, vars and tasks, and fails on it, unless it is
one of the facts the other role publishes for exactly this purpose.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES_DIR = ROOT / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks").is_dir())
# What roles publish for the others (set_fact in their tasks/publish.yml or host_library.yml).
PUBLISHED = {
    "app_release_facts",
    "gunicorn_server_facts",
    "uwsgi_server_facts",
    "daphne_server_facts",
    "common_host_library_dir",
    "supervisor_control_facts",
    "common_unit_verify",
    "common_check_mode_fresh_host",
    "common_release_file_stat",
    "python_build_interpreter",
    "oracle_client_environment",
}
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
NAME = re.compile(r"(?<![\w.'\"])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b")


def jinja_names(text: str) -> set[str]:
    names = set()
    for expression in JINJA.findall(text):
        # String literals are data, not variables.
        bare = re.sub(r"'[^']*'|\"[^\"]*\"", "''", expression)
        names.update(NAME.findall(bare))
    return names


def foreign_reads(role: str) -> list[str]:
    others = [r for r in ROLES if r != role]
    found = []
    files = [ROLES_DIR / role / "defaults" / "main.yml", ROLES_DIR / role / "vars" / "main.yml"]
    files += sorted((ROLES_DIR / role / "tasks").glob("*.yml"))
    for path in files:
        if not path.is_file():
            continue
        for name in sorted(jinja_names(path.read_text(encoding="utf-8"))):
            if name in PUBLISHED or name.startswith(role + "_"):
                continue
            owner = next((o for o in others if name.startswith(o + "_")), None)
            # common_* are the inputs of the shared task files, which every role passes on purpose.
            if owner and owner != "common":
                found.append(f"{path.relative_to(ROOT)}: {name} (a variable of pyweb.stack.{owner})")
    return found


@pytest.mark.parametrize("role", ROLES)
def test_role_reads_no_other_roles_variables(role: str) -> None:
    found = foreign_reads(role)
    assert not found, "read the other role's published fact instead, or take it as an input:\n" + "\n".join(found)


def test_the_check_finds_a_foreign_read() -> None:
    assert jinja_names('x: "{{ app_user | default(gunicorn_app_name) }}"') == {"app_user", "gunicorn_app_name"}
    assert jinja_names("x: \"{{ 'app_user' }}\"") == set()
    assert "app_release_facts" in jinja_names("{{ app_release_facts.name }}")


@pytest.mark.parametrize("role", ROLES)
def test_role_min_ansible_version_is_the_collections(role: str) -> None:
    requires = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text(encoding="utf-8"))["requires_ansible"]
    lowest = re.fullmatch(r">=\s*([0-9.]+)", requires.split(",")[0].strip()).group(1)
    meta = yaml.safe_load((ROLES_DIR / role / "meta" / "main.yml").read_text(encoding="utf-8"))
    declared = str(meta["galaxy_info"]["min_ansible_version"])
    assert lowest.split(".")[:2] == declared.split(".")[:2], f"{role}: {declared}, meta/runtime.yml: {requires}"
