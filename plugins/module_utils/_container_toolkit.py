# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Checks for the NVIDIA Container Toolkit role: the version pin against a repository index.

Since toolkit 1.18 the four packages must be at exactly the same version; a pin the
repository (or a site mirror) cannot serve for all four is refused before anything changes.
"""

from __future__ import annotations

import re

PACKAGES = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(~rc\.[0-9]+)?-[0-9]+$")


class ToolkitPinError(ValueError):
    """A pin that cannot be installed; the message names the variable."""


def parse_packages_index(text):
    """Map package name -> sorted list of versions from an apt ``Packages`` index."""
    versions = {}
    for paragraph in re.split(r"\n\s*\n", text or ""):
        fields = {}
        for line in paragraph.splitlines():
            if ":" in line and not line.startswith((" ", "\t")):
                key, _sep, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if "Package" in fields and "Version" in fields:
            versions.setdefault(fields["Package"], set()).add(fields["Version"])
    return {name: sorted(found) for name, found in versions.items()}


def check_pin(version, index_text=None, repo=""):
    """Return the pinned version if it is well formed and, given an index, served for all four packages."""
    if not _VERSION.match(str(version)):
        raise ToolkitPinError(
            f"nvidia_container_toolkit_version must be a full package version such as 1.18.0-1; got {version!r}"
        )
    if index_text is None:
        return version
    index = parse_packages_index(index_text)
    missing = [name for name in PACKAGES if version not in index.get(name, [])]
    if missing:
        offered = sorted(set.intersection(*(set(index.get(name, [])) for name in PACKAGES)))
        raise ToolkitPinError(
            f"nvidia_container_toolkit_version {version} is not in {repo or 'the repository'} for "
            f"{', '.join(missing)}; the four packages must match exactly, and it offers all four at: "
            f"{', '.join(offered) or 'no common version'}"
        )
    return version


# --- How a container gets its GPUs, by the Docker Engine on the node --------------------------
# CDI device names (`docker run --device nvidia.com/gpu=all`) need Docker 25 or later (with
# `features.cdi`, on by default from 28.2); Docker 20.10 (Debian 12's docker.io) answers
# `could not select device driver "cdi"`. The nvidia runtime hook with the /dev/char links works
# on every engine.
CDI_MIN_DOCKER = (25, 0)
NVML_FIXES = ("auto", "cdi", "dev_char_symlinks", "none")
_VERSION_PREFIX = re.compile(r"^(?:[0-9]+:)?([0-9]+\.[0-9]+(?:\.[0-9]+)?)")
# The engine each distribution's own archive carries (docker_install_method=distro), where the
# lab or the distribution's documentation has it; elsewhere it is read from the node once installed.
DISTRO_DOCKER = {("Debian", "12"): "20.10.24", ("Debian", "13"): "26.1.5"}


def _version_tuple(version):
    match = _VERSION_PREFIX.match(str(version or "").strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def docker_cdi_capable(version):
    """True, False, or None when the version is unknown."""
    parsed = _version_tuple(version)
    return None if parsed is None else parsed >= CDI_MIN_DOCKER


def resolve_nvml_fix(requested, docker_version):
    """The hand-over the node uses: ``auto`` becomes ``cdi`` on Docker 25+, else ``dev_char_symlinks``."""
    if requested not in NVML_FIXES:
        raise ToolkitPinError(
            f"nvidia_container_toolkit_nvml_fix must be one of {', '.join(NVML_FIXES)}; got {requested!r}"
        )
    if requested != "auto":
        return requested
    return "cdi" if docker_cdi_capable(docker_version) else "dev_char_symlinks"


def planned_docker_version(method, ce_version="", distro_version="", distribution="", major_version=""):
    """The engine the docker role leaves on a node ("" when only the installed node can tell)."""
    if method == "docker_repo":
        return str(ce_version or "")
    if distro_version:
        match = _VERSION_PREFIX.match(str(distro_version))
        return match.group(1) if match else ""
    return DISTRO_DOCKER.get((str(distribution), str(major_version)), "")


def gpu_handover_problems(requested, docker_version, where):
    """Why the requested hand-over cannot work with that engine ([] when it can or cannot be told).

    ``where`` says whose engine it is ("gpu1 runs", "docker_install_method=distro on Debian 12 installs").
    """
    if requested == "cdi" and docker_cdi_capable(docker_version) is False:
        return [
            f"nvidia_container_toolkit_nvml_fix=cdi hands GPUs to containers as CDI devices "
            f"(docker run --device nvidia.com/gpu=...), which needs Docker Engine 25 or later, but {where} "
            f"Docker {docker_version}: set nvidia_container_toolkit_nvml_fix to auto (the nvidia runtime hook and "
            f"the /dev/char links on this engine) or dev_char_symlinks, or install Docker 25+ "
            f"(docker_install_method=docker_repo with docker_ce_version)"
        ]
    return []
