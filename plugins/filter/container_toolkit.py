# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters for the NVIDIA Container Toolkit role (module_utils/_container_toolkit.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._container_toolkit import ToolkitPinError, check_pin


def container_toolkit_pin(version, index_text=None, repo=""):
    """The pinned version, or an error naming nvidia_container_toolkit_version."""
    try:
        return check_pin(version, index_text, repo)
    except ToolkitPinError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """gpufleet.node container toolkit filters."""

    def filters(self):
        return {"container_toolkit_pin": container_toolkit_pin}
