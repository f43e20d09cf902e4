# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Merge layers of Docker daemon.json settings without clobbering other writers.

Docker has a single configuration file that several tools write (this collection's
docker role, the NVIDIA Container Toolkit, site tooling).  The merge keeps every key
that no layer mentions, lets later layers win, merges nested mappings key by key,
replaces lists whole, and deletes a key whose layer value is ``None``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping


class DaemonJsonError(ValueError):
    """Raised for input that cannot be merged safely."""


def parse_daemon_json(text):
    """Parse the current daemon.json text; empty or whitespace-only means ``{}``."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DaemonJsonError(f"daemon.json is not valid JSON ({exc}); fix or move it aside first") from exc
    if not isinstance(data, dict):
        raise DaemonJsonError(f"daemon.json must hold a JSON object, found {type(data).__name__}")
    return data


def _merge_into(target, layer, path):
    for key, value in layer.items():
        if not isinstance(key, str):
            raise DaemonJsonError(f"daemon.json keys must be strings, found {key!r} at {path or 'top level'}")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value, f"{path}.{key}" if path else key)
        elif isinstance(value, Mapping):
            target[key] = {}
            _merge_into(target[key], value, f"{path}.{key}" if path else key)
        else:
            target[key] = copy.deepcopy(value)
    return target


def merge_daemon_json(current, *layers):
    """Return ``current`` with each layer merged over it, in order.

    ``current`` may be a dict or the file's text.  Layers must be mappings.
    """
    base = parse_daemon_json(current) if isinstance(current, str) or current is None else current
    if not isinstance(base, Mapping):
        raise DaemonJsonError(f"current daemon.json must be a mapping, found {type(base).__name__}")
    result = copy.deepcopy(dict(base))
    for index, layer in enumerate(layers):
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise DaemonJsonError(f"daemon.json layer {index} must be a mapping, found {type(layer).__name__}")
        _merge_into(result, layer, "")
    return result


def ordered_fragments(fragments):
    """Return the values of a name -> fragment mapping in name order, checking each is a mapping."""
    if fragments is None:
        return []
    if not isinstance(fragments, Mapping):
        kind = type(fragments).__name__
        raise DaemonJsonError(f"daemon.json fragments must be a mapping of name to settings, found {kind}")
    result = []
    for name in sorted(fragments):
        value = fragments[name]
        if not isinstance(value, Mapping):
            raise DaemonJsonError(f"daemon.json fragment {name!r} must be a mapping, found {type(value).__name__}")
        result.append(value)
    return result


def render_daemon_json(data):
    """Render settings the same way every time (sorted keys, 2-space indent, final newline)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
