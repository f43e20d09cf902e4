# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters that merge Docker daemon.json settings (see module_utils/_daemon_json.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._daemon_json import (
    DaemonJsonError,
    merge_daemon_json,
    ordered_fragments,
    render_daemon_json,
)

try:
    # ansible-core < 2.19 turns a templated string that looks like JSON back into a dict (and the
    # copy module then writes it compact); text of this type is kept as it is.
    from ansible.utils.native_jinja import NativeJinjaText as _Text
except ImportError:   # 2.19+ keeps strings as they are
    _Text = str


def daemon_json_merge(current, managed=None, options=None, fragments=None):
    """Merge ``managed``, ``options`` and the named ``fragments`` over ``current`` (text or dict)."""
    try:
        layers = [managed or {}, options or {}, *ordered_fragments(fragments)]
        return merge_daemon_json(current, *layers)
    except DaemonJsonError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def daemon_json_render(data):
    """Render merged settings as stable, sorted JSON text."""
    return _Text(render_daemon_json(data))


class FilterModule:
    """gpufleet.node daemon.json filters."""

    def filters(self):
        return {
            "daemon_json_merge": daemon_json_merge,
            "daemon_json_render": daemon_json_render,
        }
