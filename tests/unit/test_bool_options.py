"""Every boolean a user may pass with `-e name=true` must be read through `| bool`.

`-e app_wheelhouse_enabled=false` arrives as the string "false": ansible-core 2.19+ refuses a string as a `when:`
result, and a Jinja `x if name else y` takes any non-empty string for true. The role argument spec validation
only checks that the string converts; it does not replace the variable (extra vars outrank any set_fact anyway),
so each use must convert. This test finds every `type: bool` option of every role's argument spec and every
`pyweb_*_enabled` switch of the site playbook, and checks each use in a conditional or a Jinja expression.
molecule/gunicorn_systemd passes them as strings in a real run (side_effect.yml).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONDITIONAL_KEYS = {"when", "that", "changed_when", "failed_when", "until"}
JINJA_BLOCK = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
SITE_SWITCH = re.compile(r"\bpyweb_[a-z0-9_]+_enabled\b")


@functools.cache
def bool_options() -> frozenset[str]:
    names: set[str] = set()
    for spec_file in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        spec = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
        for entry_point in spec["argument_specs"].values():
            for name, option in (entry_point.get("options") or {}).items():
                if option.get("type") == "bool":
                    names.add(name)
    for playbook in sorted(ROOT.glob("playbooks/**/*.yml")):
        names.update(SITE_SWITCH.findall(playbook.read_text(encoding="utf-8")))
    return frozenset(names)


def jinja_parts(text: str) -> Iterator[str]:
    for match in JINJA_BLOCK.finditer(text):
        yield match.group(1) if match.group(1) is not None else match.group(2)


def expressions(node: Any, conditional: bool = False) -> Iterator[str]:
    """The Jinja expressions of a YAML document: conditionals whole, other strings' {{ }} and {% %} blocks."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from expressions(value, conditional=key in CONDITIONAL_KEYS)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item, conditional)
    elif isinstance(node, str):
        if conditional and "{{" not in node and "{%" not in node:
            yield node
        else:
            yield from jinja_parts(node)


def uncoerced_uses(expression: str, names: frozenset[str]) -> list[str]:
    found = []
    # A name inside a string literal is text, not a variable.
    expression = re.sub(r"'[^']*'|\"[^\"]*\"", "''", expression)
    for name in names:
        # Not a dict key or attribute ('name', item.name) and not a longer name.
        for match in re.finditer(rf"(?<![\w.'\"]){name}(?![\w'\"])", expression):
            rest = expression[match.end() :]
            if re.match(r"\s*(\|\s*default\([^()]*\)\s*)?\|\s*bool\b", rest):
                continue
            if re.match(r"\s+is\s+(not\s+)?defined\b", rest):
                continue
            found.append(f"{name} in: {' '.join(expression.split())[:160]}")
    return found


def sources() -> list[Path]:
    files = [*ROOT.glob("roles/*/**/*.yml"), *ROOT.glob("roles/*/templates/**/*.j2"), *ROOT.glob("playbooks/**/*.yml")]
    return sorted(path for path in files if "argument_specs" not in path.name)


def test_bool_options_are_found() -> None:
    names = bool_options()
    assert {"app_wheelhouse_enabled", "gunicorn_dev_mode", "pyweb_firewalld_enabled"} <= names


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_bool_option_is_read_through_the_bool_filter(path: Path) -> None:
    names = bool_options()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".j2":
        parts = list(jinja_parts(text))
    else:
        parts = [part for document in yaml.safe_load_all(text) for part in expressions(document)]
    problems = sorted({problem for part in parts for problem in uncoerced_uses(part, names)})
    assert not problems, "booleans read without '| bool' (a '-e name=false' string would count as true):\n" + "\n".join(
        problems
    )


def test_the_check_catches_a_bare_use() -> None:
    names = frozenset({"app_force_release"})
    assert uncoerced_uses("app_force_release or x", names)
    assert uncoerced_uses("not app_force_release", names)
    assert uncoerced_uses("'a' if app_force_release else 'b'", names)
    assert not uncoerced_uses("app_force_release | bool or x", names)
    assert not uncoerced_uses("app_force_release | default(false) | bool", names)
    assert not uncoerced_uses("'app_force_release' in x or item.app_force_release", names)
