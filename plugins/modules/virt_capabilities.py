#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: virt_capabilities
short_description: Report what a Linux host's virtualization and kernel allow, and fail early on what they do not
version_added: 0.1.0
description:
  - Detects how the host is virtualized (OpenVZ, LXC, Docker, Podman, systemd-nspawn, KVM, QEMU, Xen, VMware,
    Hyper-V, VirtualBox, or not at all) and whether it is a guest or a host.
  - Reports the kernel release and whether this kernel can run Docker (kernel 3.10 or later, the overlay
    filesystem, a mounted cgroup hierarchy, the needed namespaces, and C(CAP_SYS_ADMIN) in the bounding set).
  - Reports whether hardware-accelerated or nested virtualization is possible (C(/dev/kvm), C(vmx)/C(svm) CPU
    flags), whether systemd is PID 1, and whether TUN/TAP is available.
  - >-
    With O(require), fails with one message per missing capability that names what is missing, why, and the
    way out, for example C(OpenVZ container on kernel 2.6.32-042stab145.3: Docker needs its own kernel >= 3.10;
    use the supervisor process model or a KVM VPS).
  - Detection only reads files under C(/proc), C(/sys), C(/dev) and C(/run); no command is run and nothing is
    changed.
author:
  - pyweb.stack maintainers (@pyweb)
options:
  require:
    description:
      - Capabilities the host must have. Each one missing adds a message to RV(unmet_requirements), and the module
        fails listing all of them.
      - V(docker) - this kernel can run the Docker engine.
      - V(kvm) - C(/dev/kvm) is present and the CPU shows C(vmx)/C(svm), so KVM virtual machines can start here.
      - V(nested_virt) - hardware virtualization reaches this system (C(vmx)/C(svm) flags in a VM or on bare
        metal; in a container also C(/dev/kvm) passed in).
      - V(systemd) - systemd runs as PID 1.
      - V(tun) - C(/dev/net/tun) exists.
      - V(cgroup_v2) - the unified cgroup v2 hierarchy is in use (not v1 or hybrid).
    type: list
    elements: str
    choices: [cgroup_v2, docker, kvm, nested_virt, systemd, tun]
    default: []
  root:
    description:
      - Path of the filesystem root to inspect. Leave the default except for chroots and tests, where a tree
        holding C(proc), C(sys), C(dev) and C(run) stands in for the live system.
      - The kernel release falls back to the running kernel only when this is V(/).
    type: path
    default: /
attributes:
  check_mode:
    support: full
    description: The module only reads; it behaves the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  platform:
    support: full
    platforms: linux
    description: Reads Linux C(/proc) and C(/sys).
notes:
  - Inside a container the kernel, the CPU flags and C(/proc/filesystems) are the host's; the module reports them
    as seen from inside, which is what matters for what the container itself can run.
  - A virtualization type that cannot be pinned down is reported as V(vm-other) or V(container-other).
seealso:
  - name: systemd-detect-virt
    description: The systemd tool that detects virtualization with similar signals.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd-detect-virt.html
"""

EXAMPLES = r"""
- name: Read the virtualization facts
  pyweb.stack.virt_capabilities:
  register: virt

- name: Choose the process model from what the host can run
  ansible.builtin.set_fact:
    pyweb_process_model: "{{ 'docker' if virt.virt_capabilities.docker_capable else 'supervisor' }}"

- name: Stop before the weekend is lost on a host that cannot run Docker or systemd
  pyweb.stack.virt_capabilities:
    require:
      - docker
      - systemd

- name: A CI runner that starts VMs needs nested virtualization and /dev/kvm
  pyweb.stack.virt_capabilities:
    require: [nested_virt, kvm]
"""

RETURN = r"""
unmet_requirements:
  description: One entry per O(require) item the host lacks, in the order requested; empty when all are met.
  returned: always
  type: list
  elements: dict
  sample:
    - requirement: docker
      message: >-
        OpenVZ container on kernel 2.6.32-042stab145.3: Docker needs its own kernel >= 3.10;
        use the supervisor process model or a KVM VPS
  contains:
    requirement:
      description: The O(require) item that is not met.
      type: str
      returned: always
      sample: docker
    message:
      description: What is missing, why, and the way out.
      type: str
      returned: always
      sample: "bare-metal host: /dev/net/tun is missing, ...; load the module with modprobe tun"
virt_capabilities:
  description: Everything detected about the host.
  returned: always
  type: dict
  contains:
    virtualization_type:
      description:
        - The nearest virtualization layer, containers before VMs.
        - One of V(openvz), V(lxc), V(docker), V(podman), V(systemd-nspawn), V(container-other), V(kvm),
          V(qemu), V(xen), V(vmware), V(hyperv), V(virtualbox), V(vm-other), V(none).
        - On a host, V(openvz) means an OpenVZ hardware node, V(xen) a Xen dom0 and V(kvm) a machine with
          C(/dev/kvm) that is not itself a guest.
      type: str
      returned: always
      sample: openvz
    virtualization_role:
      description: V(guest) inside a container or VM, V(host) otherwise (bare metal included).
      type: str
      returned: always
      sample: guest
    is_container:
      description: Whether this system runs in a container (sharing its kernel with the host).
      type: bool
      returned: always
      sample: true
    is_vm:
      description: Whether this system is a virtual machine guest with a kernel of its own.
      type: bool
      returned: always
      sample: false
    kernel_release:
      description: The running kernel's release from C(/proc/sys/kernel/osrelease); empty when unknown.
      type: str
      returned: always
      sample: 2.6.32-042stab145.3
    kernel_version:
      description: The numeric start of RV(virt_capabilities.kernel_release); empty when it has none.
      type: list
      elements: int
      returned: always
      sample: [2, 6, 32]
    kernel_ok_for_docker:
      description: Whether the kernel is 3.10 or later.
      type: bool
      returned: always
      sample: false
    overlayfs_available:
      description: Whether the overlay filesystem is registered in C(/proc/filesystems) or installed as a module.
      type: bool
      returned: always
      sample: false
    cgroup_version:
      description: V(v1), V(v2), V(hybrid) (v1 controllers beside a v2 tree) or V(none).
      type: str
      returned: always
      sample: v2
    namespaces:
      description: Namespace kinds listed in C(/proc/self/ns).
      type: list
      elements: str
      returned: always
      sample: [cgroup, ipc, mnt, net, pid, user, uts]
    missing_namespaces:
      description: Namespace kinds Docker needs (ipc, mnt, net, pid, uts) that are absent.
      type: list
      elements: str
      returned: always
      sample: []
    cap_sys_admin_in_bounding_set:
      description:
        - Whether C(CAP_SYS_ADMIN) is in the capability bounding set; V(false) in an unprivileged Docker
          container. Null when C(/proc/self/status) does not say.
      type: bool
      returned: always
      sample: true
    docker_capable:
      description:
        - Whether this kernel and system can run the Docker engine, that is
          RV(virt_capabilities.docker_blockers) is empty.
      type: bool
      returned: always
      sample: false
    docker_blockers:
      description: One sentence per reason Docker cannot run here.
      type: list
      elements: str
      returned: always
      sample: ["Docker needs its own kernel >= 3.10 (this one is 2.6.32-042stab145.3)"]
    kvm_device:
      description: Whether C(/dev/kvm) exists.
      type: bool
      returned: always
      sample: false
    kvm_usable:
      description: Whether C(/dev/kvm) exists and the CPU shows C(vmx) or C(svm), so KVM guests can start here.
      type: bool
      returned: always
      sample: false
    cpu_virt_flags:
      description: The hardware virtualization flags (V(vmx), V(svm)) found in C(/proc/cpuinfo).
      type: list
      elements: str
      returned: always
      sample: [vmx]
    nested_virt_possible:
      description:
        - Whether hardware-accelerated VMs could be started from here. This needs C(vmx) or C(svm) in the CPU
          flags and, in a container, C(/dev/kvm) passed in as well.
      type: bool
      returned: always
      sample: true
    pid1_name:
      description: Command name of PID 1 from C(/proc/1/comm); empty when unreadable.
      type: str
      returned: always
      sample: systemd
    systemd_pid1:
      description: Whether PID 1 is systemd.
      type: bool
      returned: always
      sample: true
    tun_available:
      description: Whether C(/dev/net/tun) exists.
      type: bool
      returned: always
      sample: true
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyweb.stack.plugins.module_utils.virt_capabilities import (  # noqa: E402
    REQUIREMENTS,
    detect,
    evaluate_requirements,
)


def failure_message(unmet: list) -> str:
    count = len(unmet)
    noun = "requirement" if count == 1 else "requirements"
    details = " ".join(f"[{item.requirement}] {item.message}." for item in unmet)
    return f"{count} {noun} not met: {details}"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "require": {"type": "list", "elements": "str", "choices": list(REQUIREMENTS), "default": []},
            "root": {"type": "path", "default": "/"},
        },
        supports_check_mode=True,
    )
    caps = detect(module.params["root"])
    unmet = evaluate_requirements(caps, module.params["require"])
    result = {
        "changed": False,
        "virt_capabilities": caps.to_dict(),
        "unmet_requirements": [item.to_dict() for item in unmet],
    }
    if unmet:
        module.fail_json(msg=failure_message(unmet), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
