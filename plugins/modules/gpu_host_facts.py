#!/usr/bin/python
# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_host_facts
short_description: Return facts about a host's NVIDIA GPUs, driver and boot state
version_added: 1.0.0
description:
  - Reads the host without changing it and returns everything under C(ansible_facts['gpu_host']).
  - NVIDIA GPUs and NVSwitches come from C(/sys/bus/pci/devices), so they are seen whether or not a
    driver is installed. GPU names and architectures come from a built-in table of data-centre GPU
    PCI device ids; an id that is not in the table is reported with architecture V(unknown).
  - Secure Boot comes from the EFI variables, the running kernel from C(/proc), the loaded NVIDIA
    module and its flavour (open or proprietary) from C(/sys/module/nvidia) and
    C(/proc/driver/nvidia/version).
  - Installed driver packages come from C(dpkg-query) or C(rpm), and nvidia-persistenced from
    C(systemctl show), each only where the command exists. Where systemd is not PID 1 (a plain
    container) nvidia-persistenced is reported as neither active nor enabled.
  - The module never reports a change.
author:
  - gpufleet.node maintainers (!UNKNOWN)
options:
  root:
    description:
      - Directory to read instead of C(/), for tests and inspecting a mounted image.
      - Only file reads are redirected; C(dpkg-query), C(rpm) and C(systemctl) always query the
        running system.
    type: path
    default: /
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
notes:
  - On HGX B200/B300 baseboards the NVSwitches are reached through a ConnectX-7 bridge and are not
    PCI devices of the host, so O(root) shows no NVSwitch there.
seealso:
  - name: NVIDIA open GPU kernel modules
    description: The supported-GPU table the device ids were checked against.
    link: https://github.com/NVIDIA/open-gpu-kernel-modules
"""

EXAMPLES = r"""
- name: Read the GPU host facts
  gpufleet.node.gpu_host_facts:

- name: Refuse a Blackwell host that runs the proprietary kernel modules
  ansible.builtin.assert:
    that:
      - not ansible_facts['gpu_host']['open_modules_required']
        or ansible_facts['gpu_host']['nvidia_module']['flavour'] != 'proprietary'
    fail_msg: Blackwell GPUs run only with the open kernel modules

- name: Show the GPU models and driver version
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts['gpu_host']['gpu_count'] }} x {{ ansible_facts['gpu_host']['gpu_models'] | join(', ') }},
      driver {{ ansible_facts['gpu_host']['nvidia_module']['version'] | default('not loaded', true) }}
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: dict
  contains:
    gpu_host:
      description: What the host has and runs, as far as the GPU roles care.
      returned: always
      type: dict
      contains:
        gpus:
          description: One entry per NVIDIA GPU (PCI class VGA or 3D controller), sorted by PCI address.
          returned: always
          type: list
          elements: dict
          contains:
            bus_id:
              description: PCI address (domain:bus:device.function).
              type: str
              returned: always
              sample: "0000:18:00.0"
            vendor_id:
              description: PCI vendor id as sysfs writes it.
              type: str
              returned: always
              sample: "0x10de"
            device_id:
              description: PCI device id.
              type: str
              returned: always
              sample: "0x2330"
            class:
              description: PCI class code.
              type: str
              returned: always
              sample: "0x030200"
            name:
              description: Product name, or C(unknown (<device_id>)) for an id the table does not know.
              type: str
              returned: always
              sample: H100 SXM5 80GB
            architecture:
              description: GPU architecture.
              type: str
              returned: always
              choices: [volta, turing, ampere, ada, hopper, blackwell, unknown]
              sample: hopper
            known:
              description: Whether the device id is in the module's table.
              type: bool
              returned: always
            open_modules:
              description:
                - Whether this GPU can use NVIDIA's open kernel modules.
                - V(required) for Blackwell and Grace Hopper (NVIDIA supports only the open modules there),
                  V(preferred) for Turing to Hopper (NVIDIA's default since R560), V(unsupported) for
                  Volta, V(unknown) for an unknown id.
              type: str
              returned: always
              choices: [required, preferred, unsupported, unknown]
            numa_node:
              description: NUMA node the GPU is attached to, null where the platform does not say.
              type: int
              returned: always
              sample: 0
        gpu_count:
          description: Number of NVIDIA GPUs.
          type: int
          returned: always
          sample: 8
        gpu_models:
          description: Distinct GPU names, sorted.
          type: list
          elements: str
          returned: always
          sample: [H100 SXM5 80GB]
        architectures:
          description: Distinct GPU architectures, sorted.
          type: list
          elements: str
          returned: always
          sample: [hopper]
        open_modules_required:
          description: Whether any GPU runs only with the open kernel modules.
          type: bool
          returned: always
        open_modules_supported:
          description:
            - Whether every GPU can run the open kernel modules (Turing and newer). True when there is no GPU.
            - A GPU of unknown architecture counts as not supported.
          type: bool
          returned: always
        nvswitch_count:
          description: Number of NVIDIA NVSwitches on the PCI bus (PCI class "bridge, other").
          type: int
          returned: always
          sample: 4
        nvswitch_present:
          description: Whether there is at least one NVSwitch.
          type: bool
          returned: always
        secure_boot:
          description: Secure Boot state; V(disabled) on BIOS boot, V(unknown) where the EFI variables cannot be read.
          type: str
          returned: always
          choices: [enabled, disabled, unknown]
        boot_mode:
          description: How the host booted.
          type: str
          returned: always
          choices: [efi, bios]
        kernel:
          description: Release of the running kernel.
          type: str
          returned: always
          sample: 6.8.0-85-generic
        kernel_headers_installed:
          description: Whether C(/lib/modules/<kernel>/build) exists (a dangling link counts as absent).
          type: bool
          returned: always
        nouveau_loaded:
          description: Whether the nouveau module is loaded.
          type: bool
          returned: always
        nvidia_module:
          description: The loaded NVIDIA kernel module.
          type: dict
          returned: always
          contains:
            loaded:
              description: Whether the nvidia module is loaded.
              type: bool
              returned: always
            version:
              description: Its version; null when not loaded.
              type: str
              returned: always
              sample: 580.95.05
            flavour:
              description: V(open) or V(proprietary); null when not loaded or not known.
              type: str
              returned: always
              choices: [open, proprietary]
        driver_packages:
          description: Installed NVIDIA driver packages (container-toolkit packages left out).
          type: dict
          returned: always
          contains:
            manager:
              description: V(dpkg) or V(rpm); null where neither C(dpkg-query) nor C(rpm) exists.
              type: str
              returned: always
              choices: [dpkg, rpm]
            version:
              description:
                - Version of the main driver package, null when none is installed.
                - The main package is, with dpkg, C(nvidia-driver-<branch>[-server][-open]) (highest branch),
                  then C(nvidia-driver), C(nvidia-open), C(cuda-drivers); with rpm, C(nvidia-open),
                  C(cuda-drivers[-<branch>]), C(nvidia-driver), then C(kmod-nvidia*).
              type: str
              returned: always
              sample: 580.95.05-0ubuntu0.24.04.2
            packages:
              description: Package name to version.
              type: dict
              returned: always
              sample: {"nvidia-driver-580-server-open": "580.95.05-0ubuntu0.24.04.2"}
        persistenced:
          description: The nvidia-persistenced service.
          type: dict
          returned: always
          contains:
            installed:
              description: Whether systemd knows the unit or C(/usr/bin/nvidia-persistenced) exists.
              type: bool
              returned: always
            active:
              description: Whether the unit is running.
              type: bool
              returned: always
            enabled:
              description: Whether the unit is enabled at boot (a static unit is not).
              type: bool
              returned: always
        container:
          description: Whether the host itself is a container.
          type: bool
          returned: always
        container_engine:
          description: The engine that runs it, null when not a container.
          type: str
          returned: always
          choices: [docker, podman, lxc, systemd-nspawn, other]
        docker_version:
          description:
            - Version of the installed Docker Engine (C(dockerd --version)), null when C(dockerd) is not installed.
            - It decides how GPUs reach containers; CDI device names need Docker 25 or later.
          type: str
          returned: always
          sample: 20.10.24
"""

# Ansible's module layout puts imports after DOCUMENTATION, EXAMPLES and RETURN.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402 -- imports follow the docs (module layout)
from ansible_collections.gpufleet.node.plugins.module_utils._gpu_host import (  # noqa: E402 -- as above
    CommandError,
    collect,
)


def main():
    module = AnsibleModule(
        argument_spec={"root": {"type": "path", "default": "/"}},
        supports_check_mode=True,
    )

    def runner(args):
        return module.run_command(args, environ_update={"LC_ALL": "C"})

    # Every command is optional: a host without dpkg-query, rpm or systemctl simply lacks that fact.
    def which(name):
        return module.get_bin_path(name, required=False)

    try:
        facts = collect(module.params["root"], runner, which)
    except CommandError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)
    module.exit_json(changed=False, ansible_facts={"gpu_host": facts})


if __name__ == "__main__":
    main()
