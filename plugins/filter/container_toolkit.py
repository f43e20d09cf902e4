# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters for the NVIDIA Container Toolkit role (module_utils/_container_toolkit.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._container_toolkit import (
    ToolkitPinError,
    check_pin,
    gpu_handover_problems,
    planned_docker_version,
    resolve_nvml_fix,
)


def container_toolkit_pin(version, index_text=None, repo=""):
    """The pinned version, or an error naming nvidia_container_toolkit_version."""
    try:
        return check_pin(version, index_text, repo)
    except ToolkitPinError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def nvml_fix_for_engine(requested, docker_version=None):
    """The GPU hand-over for this engine: auto becomes cdi on Docker 25+, dev_char_symlinks before."""
    try:
        return resolve_nvml_fix(requested, docker_version)
    except ToolkitPinError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def docker_engine_planned(method, ce_version="", distro_version="", distribution="", major_version=""):
    """The Docker Engine version the docker role's settings install ("" when only the node can tell)."""
    return planned_docker_version(method, ce_version, distro_version, distribution, major_version)


class FilterModule:
    """gpufleet.node container toolkit filters."""

    def filters(self):
        return {
            "container_toolkit_pin": container_toolkit_pin,
            "nvml_fix_for_engine": nvml_fix_for_engine,
            "docker_engine_planned": docker_engine_planned,
            "gpu_handover_problems": gpu_handover_problems,
        }
