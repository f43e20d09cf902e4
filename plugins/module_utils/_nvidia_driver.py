# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""The one mapping from (OS, install method, branch, flavour) to NVIDIA driver packages,
plus the decisions the nvidia_driver role takes from a host's facts (hold list, reboot).

Package names come from the distributions' archives and NVIDIA's driver installation
guide (docs.nvidia.com/datacenter/tesla/driver-installation-guide): Canonical's
``-server`` / ``-server-open`` branches on Ubuntu; Debian's non-free ``nvidia-driver`` with
``nvidia-open-kernel-dkms`` from contrib; NVIDIA's CUDA repository with ``nvidia-open-<branch>``
/ ``cuda-drivers-<branch>`` on apt and the ``nvidia-driver:<branch>-open`` dnf module on EL.
"""

from __future__ import annotations

import re

METHODS = ("distro", "cuda_repo")
FLAVOURS = ("open", "proprietary")
REBOOT_POLICIES = ("auto", "never", "always")

# Branch carried by each Debian release's non-free archive (the only one `distro` can install).
DEBIAN_ARCHIVE_BRANCH = {"12": "535", "13": "550"}
# Releases whose archive driver cannot be installed today, and why (refused before any change:
# a failed DKMS build leaves dpkg with half-configured packages, and every later apt run fails).
DEBIAN_ARCHIVE_BROKEN = {
    "13": (
        "Debian 13's NVIDIA driver packages (nvidia-graphics-drivers 550.163.01-2, and 550.163.01-4~bpo13+1 "
        "in trixie-backports) do not build for Debian 13's current kernel 6.12.117 (DKMS: too few arguments "
        "to function 'pci_resize_resource'; seen in the lab on 2026-12-01), and NVIDIA's CUDA repository for "
        "Debian 13 is untested here: install the driver another way and run site.yml with --skip-tags driver"
    ),
}
# Directory names of NVIDIA's CUDA repository per OS.
CUDA_REPO_DIST = {
    ("Ubuntu", "22.04"): "ubuntu2204",
    ("Ubuntu", "24.04"): "ubuntu2404",
    ("Debian", "12"): "debian12",
    ("EL", "8"): "rhel8",
    ("EL", "9"): "rhel9",
}
# Debian 13 is supported with its own archive only: NVIDIA's CUDA repository for it was never
# reached from the lab, so cuda_repo is refused there rather than guessed.
SUPPORTED = (*CUDA_REPO_DIST, ("Debian", "13"))

# Installed packages the drift lock holds: everything the driver is made of.
_DRIVER_PACKAGE = re.compile(
    r"^(nvidia-|libnvidia-|libcuda|libnvcuvid|libnvoptix|libxnvctrl|firmware-nvidia-|"
    r"xserver-xorg-video-nvidia|libgl1-nvidia-|libglx-nvidia|libegl-nvidia|libgles-nvidia|"
    r"cuda-drivers|kmod-nvidia|linux-modules-nvidia-|linux-objects-nvidia-|linux-signatures-nvidia-)"
)
# ...but not the pieces the container toolkit role owns and versions on its own.
_NOT_DRIVER = re.compile(r"^(nvidia-container-|libnvidia-container)")


class DriverPlanError(ValueError):
    """Input that cannot be installed; the message names the variable to change."""


def os_key(os_family, distribution, major_version, version):
    """Reduce Ansible's distribution facts to the key of the mapping, e.g. ("Ubuntu", "24.04")."""
    if os_family == "RedHat":
        return ("EL", str(major_version))
    if distribution == "Ubuntu":
        return ("Ubuntu", str(version))
    if distribution == "Debian":
        return ("Debian", str(major_version))
    return (str(distribution), str(version))


def _check_choice(name, value, choices):
    if value not in choices:
        raise DriverPlanError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_os(key, method):
    if key not in SUPPORTED:
        supported = ", ".join(f"{d} {v}" for d, v in SUPPORTED)
        raise DriverPlanError(f"gpufleet.node.nvidia_driver supports {supported}; this host is {key[0]} {key[1]}")
    _check_choice("nvidia_driver_method", method, METHODS)
    if method == "cuda_repo" and key not in CUDA_REPO_DIST:
        raise DriverPlanError(
            f"nvidia_driver_method: cuda_repo is not available for {key[0]} {key[1]} in gpufleet.node "
            "(its CUDA repository was never tested): use nvidia_driver_method: distro"
        )


def driver_plan(key, method, branch, flavour, version="", kernel="", fabricmanager=False, arch="amd64"):
    """Return what to install for one host.

    ``key`` is os_key()'s tuple; ``version`` an exact package version (optional unless
    the archive needs one); ``kernel`` the running kernel release (for headers).
    The result's keys: manager, packages (specs to install), fabricmanager_packages,
    headers_packages, apt_pin (or None), dnf_module (or None), repo (cuda repo dir or None),
    debian_components (list), persistenced_unit, fabricmanager_unit.
    """
    key = tuple(key)
    _check_os(key, method)
    _check_choice("nvidia_driver_flavour", flavour, FLAVOURS)
    branch = str(branch)
    if not re.fullmatch(r"[0-9]{3}", branch):
        raise DriverPlanError(f"nvidia_driver_branch must be a driver branch such as 580; got {branch!r}")
    if version and not version.startswith(branch + "."):
        raise DriverPlanError(f"nvidia_driver_version {version!r} is not on nvidia_driver_branch {branch}")

    dist, release = key
    open_ = flavour == "open"
    plan = {
        "manager": "dnf" if dist == "EL" else "apt",
        "packages": [],
        "fabricmanager_packages": [],
        "headers_packages": [],
        "apt_pin": None,
        "dnf_module": None,
        "repo": CUDA_REPO_DIST[key] if method == "cuda_repo" else None,
        "debian_components": [],
        "persistenced_unit": "nvidia-persistenced.service",
        "fabricmanager_unit": "nvidia-fabricmanager.service",
    }

    if dist == "EL":
        if method == "distro":
            raise DriverPlanError("EL has no NVIDIA driver in its own archive: set nvidia_driver_method: cuda_repo")
        stream = f"{branch}-open" if open_ else f"{branch}-dkms"
        plan["dnf_module"] = f"nvidia-driver:{stream}"
        plan["packages"] = [f"@nvidia-driver:{stream}/default"]
        plan["fabricmanager_packages"] = [f"@nvidia-driver:{stream}/fm"] if fabricmanager else []
        plan["headers_packages"] = [f"kernel-devel-{kernel}", f"kernel-headers-{kernel}"] if kernel else []
        return plan

    spec = (lambda name: f"{name}={version}") if version else (lambda name: name)
    if kernel:
        plan["headers_packages"] = [f"linux-headers-{kernel}"]

    if dist == "Ubuntu" and method == "distro":
        suffix = "-server-open" if open_ else "-server"
        plan["packages"] = [spec(f"nvidia-driver-{branch}{suffix}"), spec(f"nvidia-utils-{branch}-server")]
        plan["fabricmanager_packages"] = (
            [spec(f"nvidia-fabricmanager-{branch}"), spec(f"libnvidia-nscq-{branch}")] if fabricmanager else []
        )
    elif dist == "Debian" and method == "distro":
        if release in DEBIAN_ARCHIVE_BROKEN:
            raise DriverPlanError(DEBIAN_ARCHIVE_BROKEN[release])
        archive_branch = DEBIAN_ARCHIVE_BRANCH.get(release)
        if branch != archive_branch:
            raise DriverPlanError(
                f"Debian {release}'s archive carries driver branch {archive_branch} only: set "
                f"nvidia_driver_branch: '{archive_branch}', or nvidia_driver_method: cuda_repo for branch {branch}"
            )
        if fabricmanager:
            raise DriverPlanError(
                "Debian's archive has no NVIDIA fabric manager, which NVSwitch systems need: "
                "set nvidia_driver_method: cuda_repo (or nvidia_driver_fabricmanager: never)"
            )
        if open_ and not version:
            raise DriverPlanError(
                "Debian's nvidia-open-kernel-dkms lags behind its nvidia-driver (security updates): set "
                "nvidia_driver_version to a version both have (apt-cache madison nvidia-open-kernel-dkms)"
            )
        plan["debian_components"] = ["contrib", "non-free", "non-free-firmware"]
        kernel_pkg = "nvidia-open-kernel-dkms" if open_ else "nvidia-kernel-dkms"
        # Versioned, so a new pin upgrades (or, allowed, downgrades) an installed driver and a pin
        # the archive lacks fails; nvidia-persistenced is a source package of its own (own version).
        plan["packages"] = [spec("nvidia-driver"), spec(kernel_pkg), spec("nvidia-smi"), "nvidia-persistenced"]
        # Every binary of the driver's source packages at one version, or apt mixes releases.
        sources = ["nvidia-graphics-drivers"] + (["nvidia-open-gpu-kernel-modules"] if open_ else [])
        plan["apt_pin"] = {"sources": sources, "version": version or f"{branch}.*"}
        # The meta package keeps headers coming with each new Debian kernel, so DKMS can build.
        plan["headers_packages"].append(f"linux-headers-{arch}")
    else:  # NVIDIA's CUDA repository on Ubuntu / Debian
        plan["packages"] = [spec(f"nvidia-open-{branch}") if open_ else spec(f"cuda-drivers-{branch}")]
        plan["fabricmanager_packages"] = [spec(f"nvidia-fabricmanager-{branch}")] if fabricmanager else []
    return plan


def check_flavour(flavour, host):
    """Refuse a flavour that cannot drive the host's GPUs (``host`` is the gpu_host facts)."""
    _check_choice("nvidia_driver_flavour", flavour, FLAVOURS)
    models = ", ".join(host.get("gpu_models") or []) or "these GPUs"
    if flavour == "proprietary" and host.get("open_modules_required"):
        raise DriverPlanError(
            f"nvidia_driver_flavour: proprietary cannot drive {models}: "
            f"{'/'.join(host.get('architectures') or [])} GPUs need the open kernel modules (set open)"
        )
    if flavour == "open" and not host.get("open_modules_supported", True):
        raise DriverPlanError(
            f"nvidia_driver_flavour: open cannot drive {models}: the open kernel modules need Turing "
            "or newer (set proprietary)"
        )
    return flavour


def packages_to_hold(installed):
    """Names among ``installed`` (package names) that make up the driver, sorted."""
    return sorted(n for n in installed if _DRIVER_PACKAGE.match(n) and not _NOT_DRIVER.match(n))


def branch_of(version):
    """The branch ("580") of a driver version ("580.95.05", "580.95.05-0ubuntu1", "3:580.95.05-1.el9")."""
    if not version:
        return None
    match = re.match(r"^(?:[0-9]+:)?([0-9]{3})\.", str(version))
    return match.group(1) if match else None


def branch_change(installed_version, branch, allow_downgrade=False):
    """Compare the installed driver with the wanted branch: 'none', 'same', 'upgrade' or 'downgrade'.

    Raises DriverPlanError for a downgrade that is not allowed.
    """
    current = branch_of(installed_version)
    if current is None:
        return "none"
    if int(current) == int(branch):
        return "same"
    if int(current) < int(branch):
        return "upgrade"
    if not allow_downgrade:
        raise DriverPlanError(
            f"the host runs driver branch {current} ({installed_version}); nvidia_driver_branch {branch} "
            "would downgrade it: set nvidia_driver_allow_downgrade: true to do that on purpose"
        )
    return "downgrade"


def reboot_decision(policy, host, installed_version, changed):
    """Decide whether to reboot after the role ran; returns (reboot, reason).

    ``host`` is the gpu_host facts dict; ``installed_version`` the driver version now
    installed (None when no driver); ``changed`` whether this run changed the driver,
    its kernel module configuration or the nouveau blacklist.
    """
    _check_choice("nvidia_driver_reboot", policy, REBOOT_POLICIES)
    if host.get("container"):
        return False, "the host is a container: the kernel belongs to the machine running it, never reboot"
    if policy == "never":
        return False, "nvidia_driver_reboot is never"
    if policy == "always":
        return (bool(changed), "nvidia_driver_reboot is always and the driver changed" if changed
                else "nvidia_driver_reboot is always but nothing changed")
    module = host.get("nvidia_module") or {}
    if host.get("nouveau_loaded") and host.get("gpu_count", 0) > 0:
        return True, "nouveau is loaded and must give the GPUs to the NVIDIA module"
    if not installed_version:
        return False, "no NVIDIA driver is installed"
    if host.get("gpu_count", 0) == 0:
        return False, "no NVIDIA GPU on this host: nothing would load the module"
    loaded = module.get("version")
    wanted = str(installed_version).rsplit(":", maxsplit=1)[-1].split("-")[0]
    if not module.get("loaded") or not loaded:
        return True, f"driver {wanted} is installed but no NVIDIA module is loaded"
    if loaded != wanted:
        return True, f"the loaded module is {loaded}, the installed driver {wanted}"
    return False, f"the loaded module already is {loaded}"


def missing_apt_components(indextargets, codename, wanted, ignore_file=""):
    """Which of ``wanted`` components apt has no source for, for ``codename``.

    ``indextargets`` is the output of
    ``apt-get indextargets --format '$(CODENAME) $(COMPONENT) $(SOURCESENTRY)'``;
    entries from ``ignore_file`` (the role's own sources file) do not count, so the
    answer is the same before and after the role wrote that file.
    """
    present = set()
    for line in (indextargets or "").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        line_codename, component, entry = parts[0], parts[1], parts[2]
        if ignore_file and entry.split(":", 1)[0] == ignore_file:
            continue
        if line_codename == codename:
            present.add(component)
    return [c for c in wanted if c not in present]
