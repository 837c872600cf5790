# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detection against fixture trees of /proc, /sys, /dev and /run: nothing here mocks the detection itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils.virt_capabilities import (
    REQUIREMENTS,
    cap_sys_admin_in_bounding_set,
    container_from_marker,
    detect,
    detect_cgroup_version,
    detect_virtualization,
    evaluate_requirements,
    parse_kernel_version,
)

FIXTURES = Path(__file__).parent / "fixtures" / "virt"

OPENVZ_DOCKER_MESSAGE = (
    "OpenVZ container on kernel 2.6.32-042stab145.3: Docker needs its own kernel >= 3.10; "
    "use the supervisor process model or a KVM VPS"
)


def fixture_root(case: str) -> str:
    root = FIXTURES / case
    assert root.is_dir(), f"missing fixture tree {root}"
    return str(root)


def make_tree(base: Path, files: dict) -> str:
    """Write a small root tree; bytes values are written raw, a value of None makes a directory."""
    for rel, content in files.items():
        path = base / rel.lstrip("/")
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return str(base)


def messages_by_requirement(caps, required):
    return {item.requirement: item.message for item in evaluate_requirements(caps, required)}


# ---------------------------------------------------------------------------
# Whole fixture trees
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param(
            "openvz_guest_2632",
            {
                "virtualization_type": "openvz",
                "virtualization_role": "guest",
                "is_container": True,
                "is_vm": False,
                "kernel_release": "2.6.32-042stab145.3",
                "kernel_version": [2, 6, 32],
                "kernel_ok_for_docker": False,
                "overlayfs_available": False,
                "cgroup_version": "none",
                "namespaces": [],
                "missing_namespaces": ["ipc", "mnt", "net", "pid", "uts"],
                "cap_sys_admin_in_bounding_set": True,
                "docker_capable": False,
                "kvm_device": False,
                "kvm_usable": False,
                "cpu_virt_flags": ["vmx"],
                "nested_virt_possible": False,
                "pid1_name": "init",
                "systemd_pid1": False,
                "tun_available": False,
            },
            id="openvz-guest",
        ),
        pytest.param(
            "lxc_container",
            {
                "virtualization_type": "lxc",
                "virtualization_role": "guest",
                "is_container": True,
                "is_vm": False,
                "kernel_release": "5.15.0-91-generic",
                "kernel_version": [5, 15, 0],
                "kernel_ok_for_docker": True,
                "overlayfs_available": True,
                "cgroup_version": "v2",
                "missing_namespaces": [],
                "cap_sys_admin_in_bounding_set": True,
                "docker_capable": True,
                "docker_blockers": [],
                "kvm_device": False,
                "cpu_virt_flags": [],
                "nested_virt_possible": False,
                "pid1_name": "systemd",
                "systemd_pid1": True,
                "tun_available": False,
            },
            id="lxc",
        ),
        pytest.param(
            "docker_container",
            {
                "virtualization_type": "docker",
                "virtualization_role": "guest",
                "is_container": True,
                "is_vm": False,
                "kernel_release": "6.1.0-18-amd64",
                "kernel_ok_for_docker": True,
                "overlayfs_available": True,
                "cgroup_version": "v2",
                "cap_sys_admin_in_bounding_set": False,
                "docker_capable": False,
                "docker_blockers": ["Docker needs CAP_SYS_ADMIN, which this container's capability bounding set lacks"],
                "nested_virt_possible": False,
                "pid1_name": "python3",
                "systemd_pid1": False,
                "tun_available": False,
            },
            id="docker",
        ),
        pytest.param(
            "kvm_guest_nested",
            {
                "virtualization_type": "kvm",
                "virtualization_role": "guest",
                "is_container": False,
                "is_vm": True,
                "docker_capable": True,
                "kvm_device": True,
                "kvm_usable": True,
                "cpu_virt_flags": ["vmx"],
                "nested_virt_possible": True,
                "systemd_pid1": True,
                "tun_available": True,
            },
            id="kvm-guest-vmx",
        ),
        pytest.param(
            "kvm_guest_no_vmx",
            {
                "virtualization_type": "kvm",
                "virtualization_role": "guest",
                "is_vm": True,
                "kvm_device": False,
                "kvm_usable": False,
                "cpu_virt_flags": [],
                "nested_virt_possible": False,
            },
            id="kvm-guest-no-vmx",
        ),
        pytest.param(
            "bare_metal",
            {
                "virtualization_type": "none",
                "virtualization_role": "host",
                "is_container": False,
                "is_vm": False,
                "kernel_version": [6, 1, 0],
                "overlayfs_available": True,
                "cgroup_version": "v2",
                "docker_capable": True,
                "kvm_device": False,
                "kvm_usable": False,
                "cpu_virt_flags": ["vmx"],
                "nested_virt_possible": True,
                "systemd_pid1": True,
                "tun_available": True,
            },
            id="bare-metal",
        ),
    ],
)
def test_detect_fixture_tree(case, expected):
    facts = detect(fixture_root(case)).to_dict()
    assert {key: facts[key] for key in expected} == expected


def test_openvz_guest_reports_the_actionable_docker_message():
    caps = detect(fixture_root("openvz_guest_2632"))
    unmet = evaluate_requirements(caps, ["docker"])
    assert [(item.requirement, item.message) for item in unmet] == [("docker", OPENVZ_DOCKER_MESSAGE)]


def test_openvz_guest_lists_every_docker_blocker_in_the_facts():
    caps = detect(fixture_root("openvz_guest_2632"))
    assert caps.docker_blockers == [
        "Docker needs its own kernel >= 3.10 (this one is 2.6.32-042stab145.3)",
        "Docker needs the overlay filesystem, which is neither in /proc/filesystems nor installed as a module",
        "Docker needs cgroups, and no cgroup v1 or v2 hierarchy is mounted",
        "Docker needs the ipc, mnt, net, pid, uts namespaces, which are missing",
    ]


def test_openvz_guest_fails_every_requirement_with_its_own_message():
    caps = detect(fixture_root("openvz_guest_2632"))
    messages = messages_by_requirement(caps, list(REQUIREMENTS))
    assert sorted(messages) == sorted(REQUIREMENTS)
    assert messages["docker"] == OPENVZ_DOCKER_MESSAGE
    assert messages["nested_virt"].startswith("OpenVZ container: a container shares the host kernel")
    assert messages["nested_virt"].endswith("use a KVM VPS or bare metal")
    assert "PID 1 is 'init', not systemd" in messages["systemd"]
    assert messages["tun"].endswith("enable TUN/TAP for this VPS in the provider's control panel")
    assert "cgroups are 'none'" in messages["cgroup_v2"]


def test_kvm_guest_without_vmx_says_to_enable_nested_virtualization_on_the_host():
    caps = detect(fixture_root("kvm_guest_no_vmx"))
    messages = messages_by_requirement(caps, ["nested_virt", "kvm", "docker", "systemd", "tun", "cgroup_v2"])
    assert list(messages) == ["nested_virt", "kvm"]
    assert messages["nested_virt"].startswith("KVM guest: the virtual CPU exposes no vmx/svm flag")
    assert "enable nested virtualization on the host" in messages["nested_virt"]
    assert messages["kvm"] == messages["nested_virt"]


def test_kvm_guest_with_vmx_meets_every_requirement():
    caps = detect(fixture_root("kvm_guest_nested"))
    assert evaluate_requirements(caps, list(REQUIREMENTS)) == []


def test_docker_container_explains_docker_in_docker_and_tun():
    caps = detect(fixture_root("docker_container"))
    messages = messages_by_requirement(caps, ["docker", "tun", "systemd"])
    assert messages["docker"] == (
        "Docker container on kernel 6.1.0-18-amd64: Docker needs CAP_SYS_ADMIN, which this container's "
        "capability bounding set lacks; run Docker on the host or in a VM, give this container nesting/privileged "
        "rights (LXC: security.nesting or features nesting=1; Docker/Podman: --privileged), "
        "or use the supervisor process model"
    )
    assert messages["tun"].endswith("start the container with --device /dev/net/tun --cap-add NET_ADMIN")
    assert "PID 1 is 'python3'" in messages["systemd"]


def test_lxc_container_without_tun_gets_a_container_specific_way_out():
    caps = detect(fixture_root("lxc_container"))
    messages = messages_by_requirement(caps, ["docker", "systemd", "tun", "cgroup_v2"])
    assert list(messages) == ["tun"]
    assert messages["tun"].startswith("LXC container: /dev/net/tun is missing")
    assert "c 10:200 rwm" in messages["tun"]


def test_bare_metal_with_vmx_but_no_dev_kvm_says_to_load_the_module():
    caps = detect(fixture_root("bare_metal"))
    messages = messages_by_requirement(caps, ["kvm", "nested_virt"])
    assert list(messages) == ["kvm"]
    assert messages["kvm"].startswith("bare-metal host: the CPU offers vmx but /dev/kvm is missing")
    assert "modprobe kvm_intel" in messages["kvm"]


# ---------------------------------------------------------------------------
# Single signals, in small trees built per test
# ---------------------------------------------------------------------------

DOCKER_READY = {
    "proc/sys/kernel/osrelease": "6.8.0-45-generic\n",
    "proc/filesystems": "nodev\tproc\nnodev\toverlay\n\text4\n",
    "proc/self/mountinfo": "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    **{f"proc/self/ns/{name}": "" for name in ("ipc", "mnt", "net", "pid", "uts")},
}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"proc/vz/version": "7.0.14\n", "proc/user_beancounters": "Version: 2.5\n"},
            ("openvz", "host"),
            id="openvz-host-version",
        ),
        pytest.param({"proc/vz/veinfo": "", "proc/bc/0/resources": ""}, ("openvz", "host"), id="openvz-host-bc"),
        pytest.param({"proc/user_beancounters": "Version: 2.5\n"}, ("openvz", "guest"), id="openvz-beancounters-only"),
        pytest.param({"run/systemd/container": "systemd-nspawn\n"}, ("systemd-nspawn", "guest"), id="nspawn-marker"),
        pytest.param({"proc/1/environ": b"PATH=/bin\0container=podman\0"}, ("podman", "guest"), id="podman-environ"),
        pytest.param({"run/.containerenv": ""}, ("podman", "guest"), id="podman-containerenv"),
        pytest.param({"proc/1/environ": b"container=wsl\0"}, ("container-other", "guest"), id="unknown-container"),
        pytest.param(
            {"proc/1/cgroup": "12:memory:/docker/3f2a9c\n0::/docker/3f2a9c\n"},
            ("docker", "guest"),
            id="docker-cgroup-v1",
        ),
        pytest.param({"proc/self/cgroup": "1:name=systemd:/lxc/web01\n"}, ("lxc", "guest"), id="lxc-self-cgroup"),
        pytest.param(
            {"proc/xen/capabilities": "control_d\n", "sys/hypervisor/type": "xen\n"}, ("xen", "host"), id="xen-dom0"
        ),
        pytest.param({"proc/xen/capabilities": "", "sys/hypervisor/type": "xen\n"}, ("xen", "guest"), id="xen-domu"),
        pytest.param(
            {"sys/class/dmi/id/sys_vendor": "Xen\n", "sys/class/dmi/id/product_name": "HVM domU\n"},
            ("xen", "guest"),
            id="xen-hvm-dmi",
        ),
        pytest.param(
            {
                "sys/class/dmi/id/sys_vendor": "VMware, Inc.\n",
                "sys/class/dmi/id/product_name": "VMware Virtual Platform\n",
            },
            ("vmware", "guest"),
            id="vmware",
        ),
        pytest.param(
            {
                "sys/class/dmi/id/sys_vendor": "Microsoft Corporation\n",
                "sys/class/dmi/id/product_name": "Virtual Machine\n",
            },
            ("hyperv", "guest"),
            id="hyperv",
        ),
        pytest.param(
            {
                "sys/class/dmi/id/sys_vendor": "Microsoft Corporation\n",
                "sys/class/dmi/id/product_name": "Surface Laptop 5\n",
            },
            ("none", "host"),
            id="surface-is-metal",
        ),
        pytest.param(
            {"sys/class/dmi/id/sys_vendor": "innotek GmbH\n", "sys/class/dmi/id/product_name": "VirtualBox\n"},
            ("virtualbox", "guest"),
            id="virtualbox",
        ),
        pytest.param(
            {"sys/class/dmi/id/sys_vendor": "Amazon EC2\n", "sys/class/dmi/id/product_name": "m5.large\n"},
            ("kvm", "guest"),
            id="ec2-nitro",
        ),
        pytest.param(
            {
                "sys/class/dmi/id/sys_vendor": "QEMU\n",
                "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc acpi_pm\n",
            },
            ("qemu", "guest"),
            id="qemu-tcg",
        ),
        pytest.param({"sys/class/dmi/id/product_name": "KVM\n"}, ("kvm", "guest"), id="kvm-product-name"),
        pytest.param(
            {"proc/cpuinfo": "processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n"},
            ("vm-other", "guest"),
            id="hypervisor-flag-only",
        ),
        pytest.param({"dev/kvm": "", "proc/cpuinfo": "flags\t\t: fpu svm\n"}, ("kvm", "host"), id="kvm-host"),
        pytest.param({}, ("none", "host"), id="empty-tree"),
    ],
)
def test_detect_virtualization_signal(tmp_path, files, expected):
    assert detect_virtualization(make_tree(tmp_path, files)) == expected


def test_container_marker_beats_vm_dmi(tmp_path):
    root = make_tree(
        tmp_path,
        {".dockerenv": "", "sys/class/dmi/id/sys_vendor": "QEMU\n", "proc/cpuinfo": "flags\t: hypervisor vmx\n"},
    )
    assert detect_virtualization(root) == ("docker", "guest")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("lxc", "lxc"),
        ("lxc-libvirt", "lxc"),
        ('"docker"', "docker"),
        ("podman\n", "podman"),
        ("oci", "container-other"),
        ("", None),
    ],
)
def test_container_from_marker(value, expected):
    assert container_from_marker(value) == expected


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("2.6.32-042stab145.3", [2, 6, 32]),
        ("3.10.0-1160.el7.x86_64", [3, 10, 0]),
        ("6.1.0-18-amd64", [6, 1, 0]),
        ("4.4", [4, 4]),
        ("6.12.0+rpt-rpi-v8", [6, 12, 0]),
        ("", []),
        ("unknown", []),
    ],
)
def test_parse_kernel_version(release, expected):
    assert parse_kernel_version(release) == expected


@pytest.mark.parametrize(
    ("release", "docker_ok"),
    [
        ("3.9.11", False),
        ("3.10.0-1160.el7.x86_64", True),
        ("2.6.32-754.el6.x86_64", False),
        ("4.19.0-26-amd64", True),
    ],
)
def test_kernel_version_threshold_for_docker(tmp_path, release, docker_ok):
    root = make_tree(tmp_path, {**DOCKER_READY, "proc/sys/kernel/osrelease": release + "\n"})
    caps = detect(root)
    assert caps.kernel_ok_for_docker is docker_ok
    assert caps.docker_capable is docker_ok


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"proc/self/mountinfo": "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"}, "v2", id="v2"),
        pytest.param(
            {
                "proc/self/mountinfo": (
                    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
                    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                )
            },
            "v1",
            id="v1",
        ),
        pytest.param(
            {
                "proc/self/mountinfo": (
                    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
                )
            },
            "hybrid",
            id="hybrid",
        ),
        pytest.param({"sys/fs/cgroup/cgroup.controllers": "cpu memory\n"}, "v2", id="sysfs-v2"),
        pytest.param({"sys/fs/cgroup/memory": None, "sys/fs/cgroup/cpu": None}, "v1", id="sysfs-v1"),
        pytest.param(
            {"proc/self/mountinfo": "28 1 254:1 / / rw - ext4 /dev/vda1 rw\n", "sys/fs/cgroup/memory": None},
            "v1",
            id="mountinfo-without-cgroup-falls-back-to-sysfs",
        ),
        pytest.param({}, "none", id="nothing"),
    ],
)
def test_detect_cgroup_version(tmp_path, files, expected):
    assert detect_cgroup_version(make_tree(tmp_path, files)) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Name:\tx\nCapBnd:\t000001ffffffffff\n", True),
        ("Name:\tx\nCapBnd:\t00000000a80425fb\n", False),
        ("Name:\tx\nCapBnd:\tnot-hex\n", None),
        ("Name:\tx\n", None),
    ],
)
def test_cap_sys_admin_in_bounding_set(tmp_path, status, expected):
    assert cap_sys_admin_in_bounding_set(make_tree(tmp_path, {"proc/self/status": status})) is expected


def test_overlay_builtin_counts_as_available(tmp_path):
    root = make_tree(
        tmp_path,
        {
            **DOCKER_READY,
            "proc/filesystems": "nodev\tproc\n\text4\n",
            "proc/sys/kernel/osrelease": "6.6.8-custom\n",
            "lib/modules/6.6.8-custom/modules.builtin": "kernel/fs/ext4/ext4.ko\nkernel/fs/overlayfs/overlay.ko\n",
        },
    )
    assert detect(root).overlayfs_available is True


def test_missing_overlay_blocks_docker_with_a_reason(tmp_path):
    root = make_tree(tmp_path, {**DOCKER_READY, "proc/filesystems": "nodev\tproc\n\text4\n"})
    caps = detect(root)
    assert caps.overlayfs_available is False
    assert caps.docker_blockers == [
        "Docker needs the overlay filesystem, which is neither in /proc/filesystems nor installed as a module"
    ]
    assert messages_by_requirement(caps, ["docker"])["docker"].startswith(
        "bare-metal host on kernel 6.8.0-45-generic: Docker needs the overlay filesystem"
    )


def test_empty_tree_never_crashes_and_reports_unknowns(tmp_path):
    caps = detect(str(tmp_path))
    assert caps.kernel_release == ""
    assert caps.kernel_version == []
    assert caps.pid1_name == ""
    assert caps.cap_sys_admin_in_bounding_set is None
    assert caps.docker_capable is False
    assert caps.docker_blockers[0] == "Docker needs a kernel >= 3.10 (this one is unknown)"
    messages = messages_by_requirement(caps, ["systemd", "docker"])
    assert "PID 1 is unknown (/proc/1/comm unreadable)" in messages["systemd"]
    assert messages["docker"].startswith("bare-metal host on kernel unknown: Docker needs a kernel >= 3.10;")


def test_directories_where_files_belong_count_as_absent(tmp_path):
    paths = (
        "proc/1/environ",
        "proc/1/comm",
        "proc/1/cgroup",
        "proc/cpuinfo",
        "proc/filesystems",
        "proc/self/mountinfo",
        "proc/self/status",
        "proc/sys/kernel/osrelease",
        "run/systemd/container",
        "sys/class/dmi/id/sys_vendor",
    )
    caps = detect(make_tree(tmp_path, dict.fromkeys(paths)))
    assert (caps.virtualization_type, caps.virtualization_role) == ("none", "host")
    assert caps.kernel_release == ""
    assert caps.cpu_virt_flags == []


def test_container_with_dev_kvm_passed_in_can_start_vms(tmp_path):
    root = make_tree(tmp_path, {"run/systemd/container": "lxc\n", "dev/kvm": "", "proc/cpuinfo": "flags\t: svm\n"})
    caps = detect(root)
    assert caps.is_container is True
    assert caps.kvm_usable is True
    assert caps.nested_virt_possible is True
    assert evaluate_requirements(caps, ["kvm", "nested_virt"]) == []


def test_container_with_dev_kvm_but_no_cpu_flag_cannot(tmp_path):
    root = make_tree(tmp_path, {".dockerenv": "", "dev/kvm": "", "proc/cpuinfo": "flags\t: fpu hypervisor\n"})
    caps = detect(root)
    assert caps.kvm_usable is False
    message = messages_by_requirement(caps, ["kvm"])["kvm"]
    assert message.startswith("Docker container: /dev/kvm is passed in but the CPU shows no vmx/svm flag")


def test_bare_metal_without_cpu_flag_points_at_firmware(tmp_path):
    caps = detect(make_tree(tmp_path, {"proc/cpuinfo": "flags\t: fpu sse2\n"}))
    message = messages_by_requirement(caps, ["nested_virt"])["nested_virt"]
    assert (
        message == "bare-metal host: the CPU shows no vmx/svm flag; enable VT-x/AMD-V (SVM) in the BIOS/UEFI settings"
    )


def test_evaluate_requirements_keeps_order_and_drops_duplicates():
    caps = detect(fixture_root("openvz_guest_2632"))
    unmet = evaluate_requirements(caps, ["tun", "docker", "tun", "systemd"])
    assert [item.requirement for item in unmet] == ["tun", "docker", "systemd"]


def test_evaluate_requirements_rejects_unknown_names():
    caps = detect(fixture_root("bare_metal"))
    with pytest.raises(ValueError, match="unknown requirement 'gpu'"):
        evaluate_requirements(caps, ["gpu"])


def test_requirements_list_is_the_closed_set():
    assert REQUIREMENTS == ("cgroup_v2", "docker", "kvm", "nested_virt", "systemd", "tun")
