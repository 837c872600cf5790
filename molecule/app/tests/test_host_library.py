"""The host library of pyweb.stack.common (tasks/host_library.yml) and the release tool that runs on it: the
release store and the probe exist once, as the collection's module_utils, and bin/app-release only imports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LIBRARY = "/usr/local/lib/pyweb-stack"
PACKAGE = f"{LIBRARY}/ansible_collections/pyweb/stack/plugins/module_utils"
LEVELS = ["ansible_collections", "pyweb", "stack", "plugins", "module_utils"]
TOOL = "/srv/flaskapp/bin/app-release"
MODULE_UTILS = Path(__file__).resolve().parents[3] / "plugins" / "module_utils"


@pytest.mark.parametrize("depth", range(1, len(LEVELS) + 1))
def test_every_level_is_a_root_owned_regular_package(host, depth: int) -> None:
    directory = host.file("/".join([LIBRARY, *LEVELS[:depth]]))
    init = host.file(f"{directory.path}/__init__.py")
    assert (directory.is_directory, directory.user, directory.group, directory.mode) == (True, "root", "root", 0o755)
    assert (init.is_file, init.user, init.group, init.mode) == (True, "root", "root", 0o644)


@pytest.mark.parametrize("name", ["_release.py", "_unixhttp.py"])
def test_the_engine_is_the_collections_own_file(host, name: str) -> None:
    installed = host.file(f"{PACKAGE}/{name}")
    assert (installed.user, installed.mode) == ("root", 0o644)
    assert installed.content_string == (MODULE_UTILS / name).read_text(encoding="utf-8")


def test_nothing_stale_is_installed(host) -> None:
    installed = host.run(f"find {PACKAGE} -maxdepth 1 -name '_*.py' ! -name '__init__.py' -printf '%f\\n'")
    shipped = {path.name for path in MODULE_UTILS.glob("_*.py") if path.name != "__init__.py"}
    assert set(installed.stdout.split()) <= shipped


def test_the_release_tool_carries_no_copy_of_the_engine(host) -> None:
    tool = host.file(TOOL).content_string
    assert f'sys.path.insert(0, "{LIBRARY}")' in tool
    for copied in ("class UnixHTTPConnection", "def point_current_at", "def releases_to_remove", "os.replace("):
        assert copied not in tool


def test_the_release_tool_runs_on_the_host_library_as_the_app_user(host) -> None:
    # The probe runs as the app user (activate.yml): it must be able to read the library root owns.
    state = host.run(f"runuser -u flaskapp -- {TOOL} state --base /srv/flaskapp")
    assert state.rc == 0, state.stderr
    assert json.loads(state.stdout)["current"] == host.file("/srv/flaskapp/current").linked_to.rsplit("/", 1)[1]
    where = host.run(
        f"runuser -u flaskapp -- $(head -1 {TOOL} | cut -c3-) -c "
        f'\'import sys; sys.path.insert(0, "{LIBRARY}"); '
        "from ansible_collections.pyweb.stack.plugins.module_utils import _release; print(_release.__file__)'"
    )
    assert where.rc == 0, where.stderr
    assert where.stdout.strip() == f"{PACKAGE}/_release.py"
