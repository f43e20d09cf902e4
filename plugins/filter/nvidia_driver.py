# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters exposing the NVIDIA driver mapping and decisions (module_utils/_nvidia_driver.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._nvidia_driver import (
    DriverPlanError,
    branch_change,
    check_flavour,
    driver_plan,
    missing_apt_components,
    os_key,
    packages_to_hold,
    reboot_decision,
)


def _wrap(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except DriverPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def nvidia_driver_plan(facts, method, branch, flavour, version="", kernel="", fabricmanager=False):
    """Packages and repository settings for a host, from its ansible_facts."""
    key = os_key(facts.get("os_family"), facts.get("distribution"),
                 facts.get("distribution_major_version"), facts.get("distribution_version"))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(facts.get("architecture"), facts.get("architecture"))
    return _wrap(driver_plan, key, method, branch, flavour, version=version, kernel=kernel,
                 fabricmanager=bool(fabricmanager), arch=arch)


def nvidia_driver_flavour(host, flavour):
    """The flavour, or an error naming nvidia_driver_flavour when it cannot drive the host's GPUs."""
    return _wrap(check_flavour, flavour, host)


def nvidia_driver_hold(installed):
    """Installed package names (a list or package_facts' dict) that make up the driver."""
    return packages_to_hold(list(installed))


def nvidia_driver_branch_change(installed_version, branch, allow_downgrade=False):
    """'none', 'same', 'upgrade' or 'downgrade' (the last only when allowed)."""
    return _wrap(branch_change, installed_version, branch, allow_downgrade)


def nvidia_driver_reboot(host, policy, installed_version, changed):
    """{'reboot': bool, 'reason': str} for the host's gpu_host facts."""
    reboot, reason = _wrap(reboot_decision, policy, host, installed_version, changed)
    return {"reboot": reboot, "reason": reason}


def apt_missing_components(indextargets, codename, wanted, ignore_file=""):
    """Components of ``wanted`` that no apt source other than ``ignore_file`` provides for ``codename``."""
    return missing_apt_components(indextargets, codename, wanted, ignore_file)


class FilterModule:
    """gpufleet.node NVIDIA driver filters."""

    def filters(self):
        return {
            "nvidia_driver_plan": nvidia_driver_plan,
            "nvidia_driver_flavour": nvidia_driver_flavour,
            "nvidia_driver_hold": nvidia_driver_hold,
            "nvidia_driver_branch_change": nvidia_driver_branch_change,
            "nvidia_driver_reboot": nvidia_driver_reboot,
            "apt_missing_components": apt_missing_components,
        }
