# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters building a workbench service's `docker run` line, systemd lines and the record of what a
service was started from (module_utils/_container_service.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._container_service import (
    ServiceSpecError,
    applied_record,
    docker_run_argv,
    gpu_devices,
    supervised_argv,
    systemd_environment,
    systemd_quote,
)


def container_service_argv(spec, gpu_count=0, cdi=True, gpus_ready=True, runner=None):
    """The service's docker run argv (through ``runner`` when given: the unit's ExecStart= line);
    an impossible GPU or ulimit setting fails naming it."""
    try:
        argv = docker_run_argv(dict(spec), int(gpu_count), bool(cdi), bool(gpus_ready))
        return supervised_argv(argv, runner) if runner else argv
    except ServiceSpecError as exc:
        raise AnsibleFilterError(f"{spec.get('name', 'service')}: {exc}") from exc


def container_service_gpus(gpus, gpu_count=0):
    """The GPUs a service gets on this host ([] none, ['all'], or indexes/UUIDs)."""
    try:
        return gpu_devices(gpus, int(gpu_count))
    except ServiceSpecError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def systemd_exec(argv):
    """An argv as one systemd Exec*= command line; a word with a control character fails naming it."""
    try:
        return systemd_quote(list(argv))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def systemd_environment_lines(env):
    """A dict as `Environment="NAME=value"` lines (sorted, quoted for systemd); bad names or values fail."""
    try:
        return systemd_environment(dict(env or {}))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def container_service_applied(applied_text, parts):
    """{record, current}: the salted record of what the service starts from, and whether the host's matches."""
    try:
        return applied_record(applied_text or "", list(parts))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {
            "container_service_applied": container_service_applied,
            "container_service_argv": container_service_argv,
            "container_service_gpus": container_service_gpus,
            "systemd_environment": systemd_environment_lines,
            "systemd_exec": systemd_exec,
        }
