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
                key, _, value = line.partition(":")
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
