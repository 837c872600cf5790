"""The capability check on a real systemd container: it must say "docker guest, systemd PID 1" and mean it."""

from __future__ import annotations

import json

import pytest


def run_module(host, args: str = "") -> dict:
    """Run pyweb.stack.virt_capabilities on the test host the way a play would; failures come back as data."""
    return host.ansible("pyweb.stack.virt_capabilities", args, check=False)


def facts(host) -> dict:
    return run_module(host)["virt_capabilities"]


def test_systemd_is_pid_1_and_running(host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in {"running", "degraded"}, state


def test_detects_a_docker_guest(host) -> None:
    found = facts(host)
    assert found["virtualization_type"] == "docker"
    assert found["virtualization_role"] == "guest"
    assert found["is_container"] is True
    assert found["is_vm"] is False


def test_agrees_with_systemd_detect_virt(host) -> None:
    assert host.check_output("systemd-detect-virt --container") == facts(host)["virtualization_type"]


def test_reports_the_running_kernel(host) -> None:
    assert facts(host)["kernel_release"] == host.check_output("uname -r")


def test_reports_systemd_as_pid_1(host) -> None:
    assert facts(host)["systemd_pid1"] is True


def test_reports_the_cgroup_layout_the_container_sees(host) -> None:
    fs_type = host.check_output("stat -f -c %T /sys/fs/cgroup")
    expected = "v2" if fs_type == "cgroup2fs" else {"v1", "hybrid"}
    found = facts(host)["cgroup_version"]
    assert found == expected if isinstance(expected, str) else found in expected


def test_tun_availability_matches_the_device(host) -> None:
    assert facts(host)["tun_available"] is host.file("/dev/net/tun").exists


def test_requirements_the_host_meets_pass(host) -> None:
    result = run_module(host, "require=systemd")
    assert not result.get("failed"), result.get("msg")
    assert result["unmet_requirements"] == []
    assert result["changed"] is False


@pytest.mark.parametrize("requirement", ["nested_virt", "kvm"])
def test_requirements_the_container_cannot_meet_fail_with_a_reason(host, requirement: str) -> None:
    # testinfra hands back the module's result without Ansible's `failed` flag: the unit tests prove fail_json;
    # here the real container must produce the reason and the way out.
    result = run_module(host, f"require={requirement}")
    unmet = {item["requirement"]: item["message"] for item in result.get("unmet_requirements", [])}
    assert list(unmet) == [requirement], json.dumps(result)
    assert "Docker container" in unmet[requirement]
    assert "/dev/kvm" in unmet[requirement]
    assert result["msg"].startswith("1 requirement not met")
    assert unmet[requirement] in result["msg"]
