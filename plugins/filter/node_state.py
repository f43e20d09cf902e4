# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Compare a ``gpufleet.node.node_state`` result with a task's wanted state (see module_utils/_node_state.py).

Each answers True only on an exact match, so a role skips a task only where it would change nothing.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._node_state import (
    file_content,
    file_ok,
    packages_installed,
    packages_not_held,
    packages_ok,
    unit_ok,
)


def node_state_file_ok(probe, path, state="file", content=None, mode=None, owner=None, group=None):
    """True when ``path`` already is the file/directory (or absence) a task would leave."""
    return file_ok(probe, path, state=state, content=content, mode=mode, owner=owner, group=group)


def node_state_file_content(probe, path):
    """The text of a file the probe read ('' when absent)."""
    try:
        return file_content(probe, path)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def node_state_packages_ok(probe, specs):
    """True when every apt spec ("name" or "name=version") is installed as written."""
    return packages_ok(probe, list(specs))


def node_state_installed(probe, names):
    """The names among ``names`` that are installed."""
    return packages_installed(probe, list(names))


def node_state_not_held(probe, names):
    """The names among ``names`` that are not on hold (all of them where dpkg was not read)."""
    return packages_not_held(probe, list(names))


def node_state_unit_ok(probe, name, enabled=None, started=None):
    """True when the unit is enabled/disabled and active/inactive as asked."""
    return unit_ok(probe, name, enabled=enabled, started=started)


class FilterModule:
    """gpufleet.node node_state filters."""

    def filters(self):
        return {
            "node_state_file_ok": node_state_file_ok,
            "node_state_file_content": node_state_file_content,
            "node_state_packages_ok": node_state_packages_ok,
            "node_state_installed": node_state_installed,
            "node_state_not_held": node_state_not_held,
            "node_state_unit_ok": node_state_unit_ok,
        }
