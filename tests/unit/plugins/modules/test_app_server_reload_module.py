# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyweb.stack.app_server_reload against real processes: the stand-in uwsgi vassal master of tests/unit/conftest.py
(the reload decisions themselves are tested through the host tools in tests/unit/roles, on the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.pyweb.stack.plugins.modules import app_server_reload


def run_module(capsys: pytest.CaptureFixture[str], check_mode: bool = False, **args: object) -> dict:
    with patch_module_args({**args, "_ansible_check_mode": check_mode}), pytest.raises(SystemExit):
        app_server_reload.main()
    return json.loads(capsys.readouterr().out)


def actions(vassal: dict) -> list[str]:
    return vassal["log"].read_text(encoding="utf-8").split() if vassal["log"].exists() else []


def test_check_mode_says_what_a_reload_would_do_and_does_nothing(capsys, uwsgi_vassal) -> None:
    uwsgi_vassal["pidfile"].with_suffix(".venv").write_text("/srv/app/venvs/old\n", encoding="utf-8")
    result = run_module(capsys, check_mode=True, server="uwsgi", app="app", config_dir=str(uwsgi_vassal["config"]))
    assert result["changed"] is True
    assert result["action"] == "reload"  # the venv changed: a chain reload cannot switch it
    assert result["diff"] == {
        "before": {"release": [uwsgi_vassal["release"]], "venv": "/srv/app/venvs/old"},
        "after": {"release": uwsgi_vassal["release"], "venv": uwsgi_vassal["venv"]},
    }
    assert actions(uwsgi_vassal) == []
    assert uwsgi_vassal["pidfile"].with_suffix(".venv").read_text(encoding="utf-8") == "/srv/app/venvs/old\n"


def test_the_same_venv_takes_a_chain_reload_and_waits_for_new_workers(capsys, uwsgi_vassal) -> None:
    uwsgi_vassal["pidfile"].with_suffix(".venv").write_text(uwsgi_vassal["venv"] + "\n", encoding="utf-8")
    result = run_module(capsys, server="uwsgi", app="app", config_dir=str(uwsgi_vassal["config"]), timeout=20)
    assert (result["changed"], result["action"], result["reloads"]) == (True, "chain-reload", 1)
    assert result["master"] == uwsgi_vassal["master"]
    assert len(result["workers"]) == 2
    assert actions(uwsgi_vassal) == ["chain-reload"]


def test_a_new_environment_reloads_the_whole_vassal_twice(capsys, uwsgi_vassal) -> None:
    config = str(uwsgi_vassal["config"])
    result = run_module(capsys, server="uwsgi", app="app", config_dir=config, environment_changed=True, timeout=20)
    assert (result["action"], result["reloads"]) == ("reload", 2)
    assert actions(uwsgi_vassal) == ["reload", "reload"]


def test_servers_not_running_or_not_configured_are_not_changed(capsys, tmp_path: Path) -> None:
    gunicorn = run_module(
        capsys,
        server="gunicorn",
        pidfile=str(tmp_path / "none.pid"),
        current=str(tmp_path / "current"),
        venv_marker=str(tmp_path / "none.venv"),
    )
    assert (gunicorn["changed"], gunicorn["action"]) == (False, "none")
    assert "not running" in gunicorn["msg"]
    uwsgi = run_module(capsys, server="uwsgi", app="app", config_dir=str(tmp_path))
    assert (uwsgi["changed"], uwsgi["action"]) == (False, "none")
    daphne = run_module(capsys, server="daphne", app="app", config_dir=str(tmp_path))
    assert (daphne["changed"], daphne["action"]) == (False, "none")


def test_each_server_names_what_it_needs(capsys) -> None:
    result = run_module(capsys, server="gunicorn", current="/srv/app/current")
    assert result["failed"] is True
    assert "pidfile" in result["msg"]
    assert "venv_marker" in result["msg"]
