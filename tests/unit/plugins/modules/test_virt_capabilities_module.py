# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module's main() end to end: arguments in, JSON out, against the module_utils fixture trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from ansible_collections.pyweb.stack.plugins.modules import virt_capabilities

FIXTURES = Path(__file__).parents[1] / "module_utils" / "fixtures" / "virt"

OPENVZ_DOCKER_MESSAGE = (
    "OpenVZ container on kernel 2.6.32-042stab145.3: Docker needs its own kernel >= 3.10; "
    "use the supervisor process model or a KVM VPS"
)


def run_module(capsys, args: dict) -> tuple[int, dict]:
    """Run main() with the given arguments; return the exit code and the parsed JSON result."""
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        virt_capabilities.main()
    return exited.value.code, json.loads(capsys.readouterr().out)


def root_of(case: str) -> str:
    return str(FIXTURES / case)


def test_reports_facts_without_requirements(capsys):
    code, result = run_module(capsys, {"root": root_of("kvm_guest_nested")})
    assert code == 0
    assert result["changed"] is False
    assert "failed" not in result
    assert result["unmet_requirements"] == []
    facts = result["virt_capabilities"]
    assert facts["virtualization_type"] == "kvm"
    assert facts["virtualization_role"] == "guest"
    assert facts["is_vm"] is True
    assert facts["nested_virt_possible"] is True
    assert facts["kernel_release"] == "6.1.0-18-amd64"
    assert facts["kernel_version"] == [6, 1, 0]


def test_every_documented_fact_is_returned(capsys):
    _code, result = run_module(capsys, {"root": root_of("bare_metal")})
    documented = set(yaml.safe_load(virt_capabilities.RETURN)["virt_capabilities"]["contains"])
    assert set(result["virt_capabilities"]) == documented


def test_openvz_guest_fails_with_all_unmet_requirements_together(capsys):
    code, result = run_module(capsys, {"root": root_of("openvz_guest_2632"), "require": ["docker", "tun", "systemd"]})
    assert code == 1
    assert result["failed"] is True
    assert result["changed"] is False
    assert [item["requirement"] for item in result["unmet_requirements"]] == ["docker", "tun", "systemd"]
    assert result["unmet_requirements"][0]["message"] == OPENVZ_DOCKER_MESSAGE
    assert result["msg"].startswith(f"3 requirements not met: [docker] {OPENVZ_DOCKER_MESSAGE}. [tun] ")
    assert "[systemd] OpenVZ container: PID 1 is 'init', not systemd" in result["msg"]
    assert result["virt_capabilities"]["virtualization_type"] == "openvz"


def test_single_unmet_requirement_uses_singular(capsys):
    code, result = run_module(capsys, {"root": root_of("kvm_guest_no_vmx"), "require": ["docker", "nested_virt"]})
    assert code == 1
    assert result["msg"].startswith(
        "1 requirement not met: [nested_virt] KVM guest: the virtual CPU exposes no vmx/svm"
    )
    assert "enable nested virtualization on the host" in result["msg"]


def test_met_requirements_exit_cleanly(capsys):
    code, result = run_module(capsys, {"root": root_of("lxc_container"), "require": ["docker", "systemd", "cgroup_v2"]})
    assert code == 0
    assert result["unmet_requirements"] == []
    assert result["virt_capabilities"]["virtualization_type"] == "lxc"


def test_check_mode_reports_the_same(capsys):
    code, result = run_module(
        capsys, {"root": root_of("docker_container"), "require": ["docker"], "_ansible_check_mode": True}
    )
    assert code == 1
    assert result["changed"] is False
    assert result["unmet_requirements"][0]["requirement"] == "docker"
    assert "CAP_SYS_ADMIN" in result["unmet_requirements"][0]["message"]


def test_unknown_requirement_is_rejected_by_the_argument_spec(capsys):
    code, result = run_module(capsys, {"root": root_of("bare_metal"), "require": ["gpu"]})
    assert code == 1
    assert "value of require must be one or more of" in result["msg"]
    assert "gpu" in result["msg"]
