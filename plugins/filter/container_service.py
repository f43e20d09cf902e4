# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters building a workbench service's `docker run` line (module_utils/_container_service.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._container_service import (
    ServiceSpecError,
    docker_run_argv,
    gpu_devices,
    systemd_quote,
)


def container_service_argv(spec, gpu_count=0, cdi=True, gpus_ready=True):
    """The service's docker run argv; an impossible GPU or ulimit setting fails naming it."""
    try:
        return docker_run_argv(dict(spec), int(gpu_count), bool(cdi), bool(gpus_ready))
    except ServiceSpecError as exc:
        raise AnsibleFilterError(f"{spec.get('name', 'service')}: {exc}") from exc


def container_service_gpus(gpus, gpu_count=0):
    """The GPUs a service gets on this host ([] none, ['all'], or indexes/UUIDs)."""
    try:
        return gpu_devices(gpus, int(gpu_count))
    except ServiceSpecError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def systemd_exec(argv):
    """An argv as one systemd Exec*= command line."""
    return systemd_quote(list(argv))


class FilterModule:
    def filters(self):
        return {
            "container_service_argv": container_service_argv,
            "container_service_gpus": container_service_gpus,
            "systemd_exec": systemd_exec,
        }
