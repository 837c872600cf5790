# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detect what a Linux host can run: its virtualization, its kernel, and what that allows.

Every probe is a plain file read relative to ``root`` so that tests can hand in a fixture tree of
``proc/``, ``sys/``, ``dev/`` and ``run/``. A file that is missing or unreadable counts as absent;
nothing here raises on a strange host. Device nodes are tested for existence only, not for type.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field

DOCKER_MIN_KERNEL = (3, 10)
DOCKER_NAMESPACES = ("ipc", "mnt", "net", "pid", "uts")
CAP_SYS_ADMIN = 21

CONTAINER_TYPES = ("openvz", "lxc", "docker", "podman", "systemd-nspawn", "container-other")
VM_TYPES = ("kvm", "qemu", "xen", "vmware", "hyperv", "virtualbox", "vm-other")

REQUIREMENTS = ("cgroup_v2", "docker", "kvm", "nested_virt", "systemd", "tun")

_TYPE_LABELS = {
    "openvz": "OpenVZ",
    "lxc": "LXC",
    "docker": "Docker",
    "podman": "Podman",
    "systemd-nspawn": "systemd-nspawn",
    "container-other": "unidentified",
    "kvm": "KVM",
    "qemu": "QEMU",
    "xen": "Xen",
    "vmware": "VMware",
    "hyperv": "Hyper-V",
    "virtualbox": "VirtualBox",
    "vm-other": "unidentified",
}

# Values of `container=` (PID 1 environment) and /run/systemd/container, mapped to our names.
_CONTAINER_MARKERS = {
    "lxc": "lxc",
    "lxc-libvirt": "lxc",
    "systemd-nspawn": "systemd-nspawn",
    "docker": "docker",
    "podman": "podman",
    "openvz": "openvz",
}

# Substrings of /proc/<pid>/cgroup paths that give a container manager away (cgroup v1, or v2 without cgroupns).
_CGROUP_MARKERS = (
    ("/docker/", "docker"),
    ("/docker-", "docker"),
    ("libpod", "podman"),
    ("/lxc/", "lxc"),
    ("/lxc.payload", "lxc"),
    ("/machine.slice/machine-", "systemd-nspawn"),
)

# DMI strings that name a hypervisor: (substring, type). Checked in order; the first match wins.
_DMI_MARKERS = (
    ("KVM", "kvm"),
    ("Amazon EC2", "kvm"),
    ("Google", "kvm"),
    ("QEMU", "qemu"),
    ("Bochs", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "virtualbox"),
    ("VirtualBox", "virtualbox"),
    ("Xen", "xen"),
    ("Parallels", "vm-other"),
    ("BHYVE", "vm-other"),
)

_DMI_FILES = ("product_name", "sys_vendor", "board_vendor", "bios_vendor")
_CPU_VIRT_FLAGS = ("vmx", "svm")
_CGROUP_V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "pids", "blkio", "freezer")
_OVERLAY_MODULE_NAMES = ("overlay.ko", "overlay.ko.xz", "overlay.ko.zst", "overlay.ko.gz")


@dataclass
class VirtCapabilities:
    """What was found on one host. ``to_dict()`` gives the module's ``virt_capabilities`` result."""

    virtualization_type: str = "none"
    virtualization_role: str = "host"
    is_container: bool = False
    is_vm: bool = False
    kernel_release: str = ""
    kernel_version: list[int] = field(default_factory=list)
    kernel_ok_for_docker: bool = False
    overlayfs_available: bool = False
    cgroup_version: str = "none"
    namespaces: list[str] = field(default_factory=list)
    missing_namespaces: list[str] = field(default_factory=list)
    cap_sys_admin_in_bounding_set: bool | None = None
    docker_capable: bool = False
    docker_blockers: list[str] = field(default_factory=list)
    kvm_device: bool = False
    kvm_usable: bool = False
    cpu_virt_flags: list[str] = field(default_factory=list)
    nested_virt_possible: bool = False
    pid1_name: str = ""
    systemd_pid1: bool = False
    tun_available: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UnmetRequirement:
    requirement: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------
# File access relative to root
# ---------------------------------------------------------------------------


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _exists(root: str, path: str) -> bool:
    return os.path.exists(_under(root, path))


def _read_bytes(root: str, path: str) -> bytes | None:
    try:
        with open(_under(root, path), "rb") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


def _read_text(root: str, path: str) -> str | None:
    data = _read_bytes(root, path)
    if data is None:
        return None
    return data.decode("utf-8", errors="replace")


def _read_first_line(root: str, path: str) -> str:
    lines = (_read_text(root, path) or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _list_dir(root: str, path: str) -> list[str]:
    try:
        return sorted(os.listdir(_under(root, path)))
    except OSError:
        return []


def _is_filesystem_root(root: str) -> bool:
    return os.path.realpath(root) == os.path.realpath("/")


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


def detect_openvz(root: str) -> str | None:
    """Return "guest" or "host" when OpenVZ/Virtuozzo is present, else None."""
    if not (_exists(root, "/proc/vz") or _exists(root, "/proc/user_beancounters")):
        return None
    if _exists(root, "/proc/vz/version") or _exists(root, "/proc/bc"):
        return "host"
    return "guest"


def container_from_marker(value: str) -> str | None:
    """Map a `container=` value (systemd's convention) to a container type."""
    value = value.strip().strip('"')
    if not value:
        return None
    return _CONTAINER_MARKERS.get(value, "container-other")


def container_from_systemd_marker(root: str) -> str | None:
    return container_from_marker(_read_first_line(root, "/run/systemd/container"))


def container_from_pid1_environ(root: str) -> str | None:
    data = _read_bytes(root, "/proc/1/environ")
    if not data:
        return None
    for entry in data.split(b"\0"):
        if entry.startswith(b"container="):
            return container_from_marker(entry[len(b"container=") :].decode("utf-8", errors="replace"))
    return None


def container_from_marker_files(root: str) -> str | None:
    if _exists(root, "/run/.containerenv"):
        return "podman"
    if _exists(root, "/.dockerenv"):
        return "docker"
    return None


def container_from_cgroup(root: str) -> str | None:
    for path in ("/proc/1/cgroup", "/proc/self/cgroup"):
        text = _read_text(root, path)
        if not text:
            continue
        for marker, kind in _CGROUP_MARKERS:
            if marker in text:
                return kind
    return None


def detect_container(root: str) -> str | None:
    """Return the container type this system runs in, or None when it is not a (non-OpenVZ) container."""
    for probe in (
        container_from_systemd_marker,
        container_from_pid1_environ,
        container_from_marker_files,
        container_from_cgroup,
    ):
        kind = probe(root)
        if kind:
            return kind
    return None


# ---------------------------------------------------------------------------
# Virtual machines
# ---------------------------------------------------------------------------


def is_xen_dom0(root: str) -> bool:
    return "control_d" in (_read_text(root, "/proc/xen/capabilities") or "")


def is_xen_guest(root: str) -> bool:
    return _read_first_line(root, "/sys/hypervisor/type") == "xen"


def hypervisor_from_dmi(root: str) -> str | None:
    values = {name: _read_first_line(root, "/sys/class/dmi/id/" + name) for name in _DMI_FILES}
    if values["sys_vendor"].startswith("Microsoft") and "Virtual Machine" in values["product_name"]:
        return "hyperv"
    for name in _DMI_FILES:
        for marker, kind in _DMI_MARKERS:
            if marker in values[name]:
                return kind
    return None


def has_kvm_clock(root: str) -> bool:
    base = "/sys/devices/system/clocksource/clocksource0/"
    sources = (_read_text(root, base + "available_clocksource") or "") + (
        _read_text(root, base + "current_clocksource") or ""
    )
    return "kvm-clock" in sources.split()


def cpu_flags(root: str) -> list[str]:
    """Flags of the first CPU in /proc/cpuinfo (x86 `flags`, or `Features` elsewhere)."""
    for line in (_read_text(root, "/proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return value.split()
    return []


def detect_vm(root: str, flags: list[str]) -> tuple[str, str] | None:
    """Return (type, role) for a hypervisor guest or a Xen dom0, or None on bare metal."""
    if is_xen_dom0(root):
        return "xen", "host"
    if is_xen_guest(root):
        return "xen", "guest"
    kind = hypervisor_from_dmi(root)
    if kind == "qemu" and has_kvm_clock(root):
        kind = "kvm"
    if kind:
        return kind, "guest"
    if "hypervisor" in flags:
        return "vm-other", "guest"
    return None


def detect_virtualization(root: str) -> tuple[str, str]:
    """Return (virtualization_type, virtualization_role). Containers win over VMs: they are the nearer layer."""
    openvz_role = detect_openvz(root)
    if openvz_role:
        return "openvz", openvz_role
    container = detect_container(root)
    if container:
        return container, "guest"
    vm = detect_vm(root, cpu_flags(root))
    if vm:
        return vm
    if _exists(root, "/dev/kvm"):
        return "kvm", "host"
    return "none", "host"


# ---------------------------------------------------------------------------
# Kernel features
# ---------------------------------------------------------------------------


def read_kernel_release(root: str) -> str:
    release = _read_first_line(root, "/proc/sys/kernel/osrelease")
    if not release and _is_filesystem_root(root):
        release = platform.release()
    return release


def parse_kernel_version(release: str) -> list[int]:
    """ "2.6.32-042stab145.3" -> [2, 6, 32]; [] when the release does not start with a version."""
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    if not found:
        return []
    return [int(part) for part in found.groups() if part is not None]


def kernel_at_least(version: list[int], minimum: tuple[int, ...]) -> bool:
    return bool(version) and tuple(version) >= minimum


def overlayfs_registered(root: str) -> bool:
    for line in (_read_text(root, "/proc/filesystems") or "").splitlines():
        if line.split() and line.split()[-1] in ("overlay", "overlayfs"):
            return True
    return False


def overlayfs_module_present(root: str, release: str) -> bool:
    if not release:
        return False
    for modules in ("/lib/modules/", "/usr/lib/modules/"):
        base = modules + release
        if "overlay.ko" in (_read_text(root, base + "/modules.builtin") or ""):
            return True
        if any(_exists(root, base + "/kernel/fs/overlayfs/" + name) for name in _OVERLAY_MODULE_NAMES):
            return True
    return False


def cgroup_version_from_mountinfo(root: str) -> str | None:
    text = _read_text(root, "/proc/self/mountinfo")
    if not text:
        return None
    fstypes = set()
    for line in text.splitlines():
        _before, sep, after = line.partition(" - ")
        if sep and after.split():
            fstypes.add(after.split()[0])
    return _cgroup_version_name(v1="cgroup" in fstypes, v2="cgroup2" in fstypes)


def cgroup_version_from_sysfs(root: str) -> str:
    entries = _list_dir(root, "/sys/fs/cgroup")
    v2 = "cgroup.controllers" in entries or "cgroup.controllers" in _list_dir(root, "/sys/fs/cgroup/unified")
    v1 = any(name in entries for name in _CGROUP_V1_CONTROLLERS)
    return _cgroup_version_name(v1=v1, v2=v2) or "none"


def _cgroup_version_name(v1: bool, v2: bool) -> str | None:
    if v1 and v2:
        return "hybrid"
    if v2:
        return "v2"
    if v1:
        return "v1"
    return None


def detect_cgroup_version(root: str) -> str:
    """One of "v1", "v2", "hybrid" (v1 controllers plus a v2 tree) or "none"."""
    return cgroup_version_from_mountinfo(root) or cgroup_version_from_sysfs(root)


def available_namespaces(root: str) -> list[str]:
    return _list_dir(root, "/proc/self/ns")


def cap_sys_admin_in_bounding_set(root: str) -> bool | None:
    """Whether CAP_SYS_ADMIN is in this process's bounding set; None when /proc/self/status does not say."""
    for line in (_read_text(root, "/proc/self/status") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key == "CapBnd":
            try:
                return bool(int(value.strip(), 16) >> CAP_SYS_ADMIN & 1)
            except ValueError:
                return None
    return None


def read_pid1_name(root: str) -> str:
    return _read_first_line(root, "/proc/1/comm")


# ---------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------


def docker_blockers(caps: VirtCapabilities) -> list[str]:
    """Why Docker cannot run on this kernel, one sentence per reason; empty when it can."""
    blockers = []
    if not caps.kernel_ok_for_docker:
        own = "its own kernel" if caps.is_container else "a kernel"
        found = caps.kernel_release or "unknown"
        blockers.append(f"Docker needs {own} >= 3.10 (this one is {found})")
    if not caps.overlayfs_available:
        blockers.append(
            "Docker needs the overlay filesystem, which is neither in /proc/filesystems nor installed as a module"
        )
    if caps.cgroup_version == "none":
        blockers.append("Docker needs cgroups, and no cgroup v1 or v2 hierarchy is mounted")
    if caps.missing_namespaces:
        blockers.append(f"Docker needs the {', '.join(caps.missing_namespaces)} namespaces, which are missing")
    if caps.cap_sys_admin_in_bounding_set is False:
        holder = "this container's" if caps.is_container else "this process's"
        blockers.append(f"Docker needs CAP_SYS_ADMIN, which {holder} capability bounding set lacks")
    return blockers


def nested_virt_possible(caps: VirtCapabilities) -> bool:
    """Whether a hypervisor could start hardware-accelerated VMs from here."""
    if caps.is_container and not caps.kvm_device:
        return False
    return bool(caps.cpu_virt_flags)


def detect(root: str = "/") -> VirtCapabilities:
    """Inspect the filesystem under ``root`` and return every capability fact."""
    caps = VirtCapabilities()
    caps.virtualization_type, caps.virtualization_role = detect_virtualization(root)
    caps.is_container = caps.virtualization_type in CONTAINER_TYPES
    caps.is_vm = caps.virtualization_type in VM_TYPES and caps.virtualization_role == "guest"

    caps.kernel_release = read_kernel_release(root)
    caps.kernel_version = parse_kernel_version(caps.kernel_release)
    caps.kernel_ok_for_docker = kernel_at_least(caps.kernel_version, DOCKER_MIN_KERNEL)
    caps.overlayfs_available = overlayfs_registered(root) or overlayfs_module_present(root, caps.kernel_release)
    caps.cgroup_version = detect_cgroup_version(root)
    caps.namespaces = available_namespaces(root)
    caps.missing_namespaces = [name for name in DOCKER_NAMESPACES if name not in caps.namespaces]
    caps.cap_sys_admin_in_bounding_set = cap_sys_admin_in_bounding_set(root)
    caps.docker_blockers = docker_blockers(caps)
    caps.docker_capable = not caps.docker_blockers

    flags = cpu_flags(root)
    caps.cpu_virt_flags = [flag for flag in _CPU_VIRT_FLAGS if flag in flags]
    caps.kvm_device = _exists(root, "/dev/kvm")
    caps.kvm_usable = caps.kvm_device and bool(caps.cpu_virt_flags)
    caps.nested_virt_possible = nested_virt_possible(caps)

    caps.pid1_name = read_pid1_name(root)
    caps.systemd_pid1 = caps.pid1_name == "systemd"
    caps.tun_available = _exists(root, "/dev/net/tun")
    return caps


# ---------------------------------------------------------------------------
# Requirements: what is missing, why, and the way out
# ---------------------------------------------------------------------------


def describe_environment(caps: VirtCapabilities) -> str:
    """A short noun phrase such as "OpenVZ container", "KVM guest" or "bare-metal host"."""
    if caps.virtualization_type == "none":
        return "bare-metal host"
    label = _TYPE_LABELS.get(caps.virtualization_type, caps.virtualization_type)
    if caps.virtualization_role == "host":
        return f"{label} host"
    if caps.is_container:
        return f"{label} container"
    if caps.virtualization_type == "vm-other":
        return "virtual machine (unidentified hypervisor)"
    return f"{label} guest"


def _docker_way_out(caps: VirtCapabilities) -> str:
    if caps.virtualization_type == "openvz":
        return "use the supervisor process model or a KVM VPS"
    if caps.is_container:
        return (
            "run Docker on the host or in a VM, give this container nesting/privileged rights "
            "(LXC: security.nesting or features nesting=1; Docker/Podman: --privileged), "
            "or use the supervisor process model"
        )
    return "boot a kernel >= 3.10 with overlay, cgroup and namespace support, or use the supervisor process model"


def docker_message(caps: VirtCapabilities) -> str | None:
    if caps.docker_capable:
        return None
    # An old kernel explains every other gap, so it is the only reason given when it applies.
    if not caps.kernel_ok_for_docker:
        own = "its own kernel" if caps.is_container else "a kernel"
        reasons = f"Docker needs {own} >= 3.10"
    else:
        reasons = "; ".join(caps.docker_blockers)
    release = caps.kernel_release or "unknown"
    return f"{describe_environment(caps)} on kernel {release}: {reasons}; {_docker_way_out(caps)}"


def _no_hardware_virt_reason(caps: VirtCapabilities) -> str:
    env = describe_environment(caps)
    if caps.is_container and caps.kvm_device:
        return (
            f"{env}: /dev/kvm is passed in but the CPU shows no vmx/svm flag, so KVM cannot start guests; "
            "enable hardware (or nested) virtualization on the host"
        )
    if caps.is_container:
        way_out = (
            "use a KVM VPS or bare metal"
            if caps.virtualization_type == "openvz"
            else "pass /dev/kvm in from a KVM-capable host, or use a KVM VPS or bare metal"
        )
        return f"{env}: a container shares the host kernel, cannot load kvm and has no /dev/kvm; {way_out}"
    if caps.is_vm:
        return (
            f"{env}: the virtual CPU exposes no vmx/svm flag, so nested virtualization is impossible; "
            "enable nested virtualization on the host (kvm_intel/kvm_amd nested=1 and CPU model host-passthrough, "
            "or the provider's nested-virtualization option), or use bare metal"
        )
    return f"{env}: the CPU shows no vmx/svm flag; enable VT-x/AMD-V (SVM) in the BIOS/UEFI settings"


def nested_virt_message(caps: VirtCapabilities) -> str | None:
    if caps.nested_virt_possible:
        return None
    return _no_hardware_virt_reason(caps)


def kvm_message(caps: VirtCapabilities) -> str | None:
    if caps.kvm_usable:
        return None
    if caps.cpu_virt_flags and not caps.is_container:
        return (
            f"{describe_environment(caps)}: the CPU offers {'/'.join(caps.cpu_virt_flags)} but /dev/kvm is missing; "
            "load the module (modprobe kvm_intel or modprobe kvm_amd) and install the KVM packages"
        )
    return _no_hardware_virt_reason(caps)


def systemd_message(caps: VirtCapabilities) -> str | None:
    if caps.systemd_pid1:
        return None
    pid1 = f"'{caps.pid1_name}'" if caps.pid1_name else "unknown (/proc/1/comm unreadable)"
    return (
        f"{describe_environment(caps)}: PID 1 is {pid1}, not systemd, so systemd units cannot be managed; "
        "use the supervisor process model, or a VM or container image that boots systemd as init"
    )


def _tun_way_out(caps: VirtCapabilities) -> str:
    if caps.virtualization_type == "openvz":
        return "enable TUN/TAP for this VPS in the provider's control panel"
    if caps.virtualization_type in ("docker", "podman"):
        return "start the container with --device /dev/net/tun --cap-add NET_ADMIN"
    if caps.is_container:
        return "pass /dev/net/tun into the container (bind mount plus device cgroup rule c 10:200 rwm)"
    return "load the module with modprobe tun"


def tun_message(caps: VirtCapabilities) -> str | None:
    if caps.tun_available:
        return None
    return (
        f"{describe_environment(caps)}: /dev/net/tun is missing, so TUN/TAP interfaces (OpenVPN, userspace "
        f"WireGuard, Tailscale) cannot be created; {_tun_way_out(caps)}"
    )


def cgroup_v2_message(caps: VirtCapabilities) -> str | None:
    if caps.cgroup_version == "v2":
        return None
    if caps.is_container:
        way_out = "the host decides the cgroup layout, so switch the host to cgroup v2 or use a KVM VPS"
    else:
        way_out = (
            "boot with systemd.unified_cgroup_hierarchy=1 on a kernel >= 4.15, or a distribution that defaults to v2"
        )
    return (
        f"{describe_environment(caps)}: cgroups are '{caps.cgroup_version}', not a unified cgroup v2 hierarchy; "
        f"{way_out}"
    )


_MESSAGE_BUILDERS = {
    "cgroup_v2": cgroup_v2_message,
    "docker": docker_message,
    "kvm": kvm_message,
    "nested_virt": nested_virt_message,
    "systemd": systemd_message,
    "tun": tun_message,
}


def evaluate_requirements(caps: VirtCapabilities, required: list[str]) -> list[UnmetRequirement]:
    """One UnmetRequirement per requested capability that this host lacks, in the order asked for."""
    unmet = []
    seen = set()
    for name in required:
        if name in seen:
            continue
        seen.add(name)
        if name not in _MESSAGE_BUILDERS:
            raise ValueError(f"unknown requirement {name!r}; choose from {', '.join(REQUIREMENTS)}")
        message = _MESSAGE_BUILDERS[name](caps)
        if message:
            unmet.append(UnmetRequirement(requirement=name, message=message))
    return unmet
