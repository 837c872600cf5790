"""Switching gunicorn_process_manager both ways, each with a new release, and a release with new requirements
under supervisor between them, under load (side_effect_switch.yml): what the load generator on the host counted,
and who runs gunicorn after each step. Then a new app_environment under the same load: gunicorn's master executed
again in place, every process with the new value."""

from __future__ import annotations

import json

import pytest

RECORD = "/root/pyweb-gunicorn-switch.json"


@pytest.fixture
def switches(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


@pytest.mark.parametrize(
    ("manager", "old_version", "version"), [("supervisor", "3.0.0", "4.0.0"), ("systemd", "5.0.0", "6.0.0")]
)
def test_switch_loses_no_request_and_serves_the_new_release(
    switches, manager: str, old_version: str, version: str
) -> None:
    switch = switches[manager]
    assert switch["rc"] == 0
    assert switch["load"]["failed"] == 0, switch["load"]["errors"]
    assert switch["load"]["ok"] > 0
    # Answers from before and after the switch: the load ran across the handover.
    assert switch["load"]["versions"] == [old_version, version]
    assert json.loads(switch["state"]["answer"])["version"] == version


def test_new_requirements_under_supervisor_move_the_master_into_the_new_venv_in_place(switches) -> None:
    step = switches["supervisor_new_venv"]
    before, after = step["before"], step["state"]
    assert step["rc"] == 0
    assert step["load"]["failed"] == 0, step["load"]["errors"]
    assert step["load"]["versions"] == ["4.0.0", "5.0.0"]
    assert after["program"] == "RUNNING"
    assert after["master"] == before["master"], "supervisor's pid changed: the master was restarted"
    assert after["venv"] != before["venv"]
    assert after["pythons"] == f"{after['venv']}/bin/python"
    assert json.loads(after["answer"])["prefix"] == after["venv"]
    assert after["cwds"] == after["current"]
    assert not set(after["workers"].split(",")) & set(before["workers"].split(",")), "old workers survived"


def test_supervisor_ran_gunicorn_after_the_first_switch(switches) -> None:
    state = switches["supervisor"]["state"]
    assert state["program"] == "RUNNING"
    assert state["unit"] == "inactive"
    assert state["unit_file"] == "no"


def test_systemd_runs_gunicorn_after_switching_back(host, switches) -> None:
    state = switches["systemd"]["state"]
    assert state["unit"] == "active"
    assert state["program"] != "RUNNING"
    assert not host.file("/etc/supervisor/conf.d/gunicorn-asgiapp--asgiapp-web.conf").exists
    assert not host.file("/etc/systemd/system/asgiapp-web.service.d/pyweb-handover.conf").exists


def test_new_environment_under_systemd_loses_no_request_and_reaches_every_process(switches) -> None:
    rotation = switches["environment"]
    assert rotation["rc"] == 0
    assert rotation["load"]["failed"] == 0, rotation["load"]["errors"]
    assert rotation["load"]["ok"] > 0
    assert rotation["markers"] == [rotation["marker"]], "a process still runs with the old environment"
    assert rotation["after"][0] == rotation["before"][0], "the master was restarted, not executed again in place"
    assert len(rotation["after"]) == 3
    assert not set(rotation["after"][1:]) & set(rotation["before"][1:]), "old workers survived"
