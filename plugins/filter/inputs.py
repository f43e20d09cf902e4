# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters for the inventory checks (plugins/module_utils/_inputs.py)."""

from __future__ import annotations

from ansible_collections.gpufleet.node.plugins.module_utils._inputs import problems_report


def inventory_problems_report(problems_by_host, hosts_all=()):
    """One message for the whole inventory: each distinct problem once, with the hosts it is on."""
    return problems_report(dict(problems_by_host or {}), list(hosts_all))


class FilterModule:
    def filters(self):
        return {"inventory_problems_report": inventory_problems_report}
