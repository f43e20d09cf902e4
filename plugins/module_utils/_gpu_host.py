# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Read what the roles need to know about a GPU host, without changing anything.

Every function here depends only on a directory tree (``root``, ``/`` on a real host) and on
the output of three optional commands, handed in through ``runner`` and ``which``.  That keeps
the module ``gpu_host_facts`` a thin wrapper and lets the unit tests run on small fixture trees
shaped like real hosts.  ``root`` re-roots file reads only: the commands always ask the running
system.
"""

from __future__ import annotations

import os
import re

NVIDIA_VENDOR = 0x10DE

# PCI class code = base class, subclass, programming interface; we compare base+subclass.
_GPU_CLASSES = frozenset({0x0300, 0x0302})  # VGA compatible controller, 3D controller
# NVSwitches enumerate as "Bridge: other" (lspci on an HGX H100: "Bridge: NVIDIA Corporation
# Device 22a3").  NVIDIA's HD-audio functions (0x0403) and USB controllers (0x0c03) are neither.
# On HGX B200/B300 the NVSwitches sit behind a ConnectX-7 bridge and are not PCI devices of the
# host at all (NVIDIA Fabric Manager user guide), so nvswitch_count is 0 there.
_NVSWITCH_CLASS = 0x0680

# Which kernel-module flavour each architecture can use, as NVIDIA states it:
#   https://developer.nvidia.com/blog/nvidia-transitions-fully-towards-open-source-gpu-kernel-modules/
#     Grace Hopper and Blackwell: "you must use the open-source GPU kernel modules. The
#     proprietary drivers are unsupported on these platforms."  Turing, Ampere, Ada Lovelace,
#     Hopper: NVIDIA recommends the open modules.  Maxwell, Pascal, Volta: the open modules "are
#     not compatible"; mixed old+new systems stay on the proprietary driver.
#   https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/kernel-modules.html
#     "Starting in the 560 driver release series, the open kernel module flavor is the default
#     and suggested installation."  Open modules are "only for Turing and newer architectures".
OPEN_MODULES = {
    "volta": "unsupported",
    "turing": "preferred",
    "ampere": "preferred",
    "ada": "preferred",
    "hopper": "preferred",
    "blackwell": "required",
    "unknown": "unknown",
}
# Grace Hopper is Hopper silicon, but NVIDIA supports it with the open modules only (blog above).
_OPEN_MODULES_BY_DEVICE = {"0x2342": "required", "0x2348": "required"}

# NVIDIA data-centre GPUs a fleet may hold: PCI device id -> (name, architecture).
# Sources, marked per line:
#   R  NVIDIA/open-gpu-kernel-modules README.md, "Compatible GPUs" table (release 595.45.04,
#      commit df1c9a3de2be).  It lists only GPUs the open modules drive, so never Volta.
#   P  pci.ids, vendor 10de (github.com/pciutils/pciids snapshot c1c12547d626, 2026-08-22).
#   F  NVIDIA Fabric Manager user guide, HGX B100 lspci example.
# The architecture is the one of the chip code name pci.ids gives each id: GV100 Volta, TU104
# Turing, GA10x Ampere, AD10x Ada Lovelace, GH100 Hopper, GB10x/GB11x/GB20x Blackwell.  Names
# follow pci.ids; where pci.ids and NVIDIA disagree the product name NVIDIA uses wins (noted).
# Ids neither source confirms are left out and report as "unknown (0x....)".
GPU_MODELS = {
    # Volta (proprietary modules only)
    "0x1db1": ("V100 SXM2 16GB", "volta"),  # P
    "0x1df5": ("V100 SXM2 16GB", "volta"),  # P
    "0x1db5": ("V100 SXM2 32GB", "volta"),  # P
    "0x1db8": ("V100 SXM3 32GB", "volta"),  # P
    "0x1db4": ("V100 PCIe 16GB", "volta"),  # P
    "0x1db6": ("V100 PCIe 32GB", "volta"),  # P
    "0x1df6": ("V100S PCIe 32GB", "volta"),  # P
    # Turing
    "0x1eb8": ("T4", "turing"),  # R P
    # Ampere
    "0x20b0": ("A100 SXM4 40GB", "ampere"),  # R P
    "0x20b2": ("A100 SXM4 80GB", "ampere"),  # R P
    "0x20b3": ("A100 SXM 64GB", "ampere"),  # R P
    "0x20b1": ("A100 PCIe 40GB", "ampere"),  # P
    "0x20f1": ("A100 PCIe 40GB", "ampere"),  # R P
    "0x20b5": ("A100 PCIe 80GB", "ampere"),  # R P
    "0x20bd": ("A800 SXM4 40GB", "ampere"),  # R P
    "0x20f3": ("A800 SXM4 80GB", "ampere"),  # R P
    "0x20f5": ("A800 PCIe 80GB", "ampere"),  # R P
    "0x20b7": ("A30", "ampere"),  # R P
    "0x2235": ("A40", "ampere"),  # R P
    "0x2236": ("A10", "ampere"),  # R P
    "0x2237": ("A10G", "ampere"),  # R P
    "0x25b6": ("A2 / A16", "ampere"),  # R P; the subsystem id tells them apart, see below
    # Hopper
    "0x2330": ("H100 SXM5 80GB", "hopper"),  # R P
    "0x2331": ("H100 PCIe", "hopper"),  # R P
    "0x2321": ("H100 NVL", "hopper"),  # R (pci.ids: "H100L 94GB")
    "0x2339": ("H100 SXM5 94GB", "hopper"),  # P (R: "NVIDIA H100")
    "0x2324": ("H800", "hopper"),  # R P
    "0x2322": ("H800 PCIe", "hopper"),  # R P
    "0x233a": ("H800 NVL", "hopper"),  # R (pci.ids: "H800L 94GB")
    "0x2335": ("H200 SXM 141GB", "hopper"),  # R P
    "0x233b": ("H200 NVL", "hopper"),  # R P
    "0x2329": ("H20", "hopper"),  # R P
    "0x232c": ("H20 HBM3e", "hopper"),  # R ("H20-3e") P
    "0x2342": ("GH200", "hopper"),  # R (120GB and 480GB) P
    "0x2348": ("GH200 144GB HBM3e", "hopper"),  # R P
    # Ada Lovelace
    "0x26b5": ("L40", "ada"),  # R P
    "0x26b9": ("L40S", "ada"),  # R P
    "0x26ba": ("L20", "ada"),  # R P
    "0x27b8": ("L4", "ada"),  # R P
    "0x26b1": ("RTX 6000 Ada Generation", "ada"),  # R P
    # Blackwell (open modules only)
    "0x29bc": ("B100", "blackwell"),  # P F
    "0x2901": ("B200", "blackwell"),  # R P
    "0x2941": ("GB200", "blackwell"),  # R P ("HGX GB200")
    "0x3182": ("B300 SXM6 AC", "blackwell"),  # R P
    "0x31c2": ("GB300", "blackwell"),  # R P
    "0x2bb1": ("RTX PRO 6000 Blackwell Workstation Edition", "blackwell"),  # R P
    "0x2bb4": ("RTX PRO 6000 Blackwell Max-Q Workstation Edition", "blackwell"),  # R P
    "0x2bb5": ("RTX PRO 6000 Blackwell Server Edition", "blackwell"),  # R P
}
# (device, subsystem vendor, subsystem device) -> name, for ids shared by several products (R).
GPU_SUBSYSTEM_NAMES = {
    ("0x25b6", "0x10de", "0x14a9"): "A16",
    ("0x25b6", "0x10de", "0x157e"): "A2",
}

_SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
_CONTAINER_ENGINES = {
    "docker": "docker",
    "podman": "podman",
    "lxc": "lxc",
    "lxc-libvirt": "lxc",
    "systemd-nspawn": "systemd-nspawn",
}
# systemctl's answer where systemd is not PID 1 (plain containers, chroots): not an error for
# a probe, it only means no unit can be running.
_NO_SYSTEMD = ("not been booted with systemd", "Failed to connect to bus")


class CommandError(Exception):
    """A command failed in a way that says the host is broken, not merely lacking something."""

    def __init__(self, cmd, rc, stdout, stderr):
        super().__init__(f"{cmd[0]} failed with rc {rc}: {(stderr or stdout).strip()}")
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


def _path(root, *parts):
    return os.path.join(root, *(p.lstrip("/") for p in parts))


def _read(path):
    """File content without surrounding whitespace, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def resolve_in_root(root, path, max_links=40):
    """Resolve ``path`` as if ``root`` were ``/``: absolute link targets stay inside ``root``.

    Returns the real path under ``root``, or None for a link loop.  A dangling link resolves
    to a path that does not exist, which the caller tests.
    """
    pending = [p for p in path.split("/") if p]
    done = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if os.path.islink(candidate):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        done.append(part)
    return os.path.join(root, *done)


def _hex(text):
    try:
        return int(text, 16)
    except (TypeError, ValueError):
        return None


def _bus_sort_key(bus_id):
    try:
        domain, bus, rest = bus_id.split(":")
        device, function = rest.split(".")
        return (0, int(domain, 16), int(bus, 16), int(device, 16), int(function, 16), bus_id)
    except ValueError:
        return (1, 0, 0, 0, 0, bus_id)


def read_pci_devices(root):
    """Every PCI function under ``<root>/sys/bus/pci/devices`` with its ids, class and NUMA node."""
    base = _path(root, "sys/bus/pci/devices")
    try:
        names = os.listdir(base)
    except OSError:
        return []
    devices = []
    for bus_id in sorted(names, key=_bus_sort_key):
        entry = {"bus_id": bus_id}
        for field in ("vendor", "device", "class", "subsystem_vendor", "subsystem_device", "numa_node"):
            value = _read(os.path.join(base, bus_id, field))
            entry[field] = value.lower() if value is not None else None
        devices.append(entry)
    return devices


def _numa_node(text):
    try:
        node = int(text)
    except (TypeError, ValueError):
        return None
    return node if node >= 0 else None


def describe_gpu(device):
    """The ``gpus`` entry for one NVIDIA display-class PCI function."""
    device_id = device["device"]
    known = device_id in GPU_MODELS
    name, architecture = GPU_MODELS.get(device_id, (f"unknown ({device_id})", "unknown"))
    subsystem = (device_id, device.get("subsystem_vendor"), device.get("subsystem_device"))
    name = GPU_SUBSYSTEM_NAMES.get(subsystem, name)
    return {
        "bus_id": device["bus_id"],
        "vendor_id": device["vendor"],
        "device_id": device_id,
        "class": device["class"],
        "name": name,
        "architecture": architecture,
        "known": known,
        "open_modules": _OPEN_MODULES_BY_DEVICE.get(device_id, OPEN_MODULES[architecture]),
        "numa_node": _numa_node(device.get("numa_node")),
    }


def classify_pci(devices):
    """Split PCI functions into NVIDIA GPUs (described) and the number of NVSwitches."""
    gpus = []
    nvswitches = 0
    for device in devices:
        if _hex(device.get("vendor")) != NVIDIA_VENDOR:
            continue
        pci_class = _hex(device.get("class"))
        if pci_class is None:
            continue
        if pci_class >> 8 in _GPU_CLASSES:
            gpus.append(describe_gpu(device))
        elif pci_class >> 8 == _NVSWITCH_CLASS:
            nvswitches += 1
    return gpus, nvswitches


def summarize_gpus(gpus):
    """Fleet-level answers: which models, which architectures, which kernel-module flavour."""
    return {
        "gpu_count": len(gpus),
        "gpu_models": sorted({gpu["name"] for gpu in gpus}),
        "architectures": sorted({gpu["architecture"] for gpu in gpus}),
        "open_modules_required": any(gpu["open_modules"] == "required" for gpu in gpus),
        # An unknown GPU might be pre-Turing, so it does not count as able to run the open modules.
        "open_modules_supported": all(gpu["open_modules"] in ("required", "preferred") for gpu in gpus),
    }


def secure_boot_state(root):
    """Return (boot_mode, secure_boot) from the EFI variables under ``<root>/sys/firmware/efi``."""
    efi = _path(root, "sys/firmware/efi")
    if not os.path.isdir(efi):
        return "bios", "disabled"
    efivars = os.path.join(efi, "efivars")
    variable = os.path.join(efivars, _SECURE_BOOT_VAR)
    if os.path.exists(variable):
        # efivarfs: 4 bytes of attributes, then the one-byte value.
        return "efi", _secure_boot_value(_read_bytes(variable), 4)
    legacy = os.path.join(efi, "vars", _SECURE_BOOT_VAR, "data")
    if os.path.exists(legacy):
        return "efi", _secure_boot_value(_read_bytes(legacy), 0)
    try:
        populated = bool(os.listdir(efivars))
    except OSError:
        populated = False
    # Readable EFI variables without SecureBoot: firmware without Secure Boot at all.
    return "efi", "disabled" if populated else "unknown"


def _secure_boot_value(data, offset):
    if data is None or len(data) <= offset:
        return "unknown"
    return {1: "enabled", 0: "disabled"}.get(data[offset], "unknown")


def kernel_state(root):
    """Running kernel release and whether its headers (the ``build`` link) are installed."""
    release = _read(_path(root, "proc/sys/kernel/osrelease")) or None
    headers = False
    if release:
        build = resolve_in_root(root, f"/lib/modules/{release}/build")
        headers = build is not None and os.path.isdir(build)
    return release, headers


def _proc_modules(root):
    text = _read(_path(root, "proc/modules")) or ""
    return {line.split(" ", 1)[0] for line in text.splitlines() if line}


def nouveau_loaded(root):
    return os.path.isdir(_path(root, "sys/module/nouveau")) or "nouveau" in _proc_modules(root)


_NVRM_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")


def nvidia_module_state(root):
    """Loaded NVIDIA kernel module: version and flavour.

    ``/proc/driver/nvidia/version`` starts "NVRM version: NVIDIA UNIX Open Kernel Module for
    x86_64  <version>  Release Build ..." for the open modules and "NVRM version: NVIDIA UNIX
    x86_64 Kernel Module  <version>  <date>" for the proprietary ones.
    """
    sys_module = _path(root, "sys/module/nvidia")
    proc_text = _read(_path(root, "proc/driver/nvidia/version"))
    loaded = os.path.isdir(sys_module) or proc_text is not None or "nvidia" in _proc_modules(root)
    if not loaded:
        return {"loaded": False, "version": None, "flavour": None}
    version = _read(os.path.join(sys_module, "version")) or None
    if version is None and proc_text:
        match = _NVRM_VERSION.search(proc_text)
        version = match.group(1) if match else None
    flavour = None
    if proc_text:
        flavour = "open" if "Open Kernel Module" in proc_text else "proprietary"
    return {"loaded": True, "version": version, "flavour": flavour}


DPKG_QUERY = ("-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", "*nvidia*")
RPM_QUERY = ("-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n")

# Packages that match "nvidia" but belong to the container stack, not the driver.
_NOT_DRIVER = re.compile(r"container|docker")
_RPM_DRIVER_NAME = re.compile(r"nvidia|^cuda-drivers(-\d+)?$")
_UBUNTU_DRIVER = re.compile(r"^nvidia-driver-(\d+)(-server)?(-open)?$")


def parse_dpkg(text):
    """Installed packages from ``dpkg-query -W`` output: status "ii" (installed) or "hi" (held)."""
    packages = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[2][:2] not in ("ii", "hi"):
            continue
        if _NOT_DRIVER.search(fields[0]):
            continue
        packages[fields[0]] = fields[1]
    return packages


def parse_rpm(text):
    """NVIDIA driver packages from ``rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n'``."""
    packages = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or not _RPM_DRIVER_NAME.search(fields[0]) or _NOT_DRIVER.search(fields[0]):
            continue
        packages[fields[0]] = fields[1]
    return packages


def main_driver_package(manager, packages):
    """Name of the package whose version is "the driver version", or None.

    dpkg: Ubuntu's nvidia-driver-<branch>[-server][-open] (the highest branch when several are
    installed), then Debian's nvidia-driver, then NVIDIA's nvidia-open and cuda-drivers metas.
    rpm: NVIDIA's nvidia-open and cuda-drivers[-<branch>] metas, then nvidia-driver, then the
    first kmod-nvidia* package (kmod-nvidia-open-dkms, kmod-nvidia-latest-dkms, ...).
    """
    ubuntu = sorted((int(match.group(1)), name) for name in packages if (match := _UBUNTU_DRIVER.match(name)))
    cuda_drivers = sorted(name for name in packages if re.match(r"^cuda-drivers(-\d+)?$", name))
    kmods = sorted(name for name in packages if name.startswith("kmod-nvidia"))
    if manager == "dpkg":
        candidates = [name for _series, name in reversed(ubuntu)] + ["nvidia-driver", "nvidia-open", *cuda_drivers]
    elif manager == "rpm":
        candidates = ["nvidia-open", *cuda_drivers, "nvidia-driver", *kmods]
    else:
        candidates = []
    return next((name for name in candidates if name in packages), None)


def driver_packages(runner, which):
    """Installed NVIDIA driver packages through dpkg-query or rpm, whichever the host has."""
    dpkg_query = which("dpkg-query")
    if dpkg_query:
        cmd = [dpkg_query, *DPKG_QUERY]
        rc, out, err = runner(cmd)
        # dpkg-query exits 1 when the pattern matches nothing it has ever heard of.
        if rc == 1 and "no packages found" in err:
            out = ""
        elif rc != 0:
            raise CommandError(cmd, rc, out, err)
        manager, packages = "dpkg", parse_dpkg(out)
    else:
        rpm = which("rpm")
        if not rpm:
            return {"manager": None, "version": None, "packages": {}}
        cmd = [rpm, *RPM_QUERY]
        rc, out, err = runner(cmd)
        if rc != 0:
            raise CommandError(cmd, rc, out, err)
        manager, packages = "rpm", parse_rpm(out)
    main = main_driver_package(manager, packages)
    return {"manager": manager, "version": packages[main] if main else None, "packages": packages}


def parse_systemctl_show(text):
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def persistenced_state(root, runner, which):
    """nvidia-persistenced: unit (or binary) present, running, enabled at boot."""
    binary = os.path.exists(_path(root, "usr/bin/nvidia-persistenced"))
    state = {"installed": binary, "active": False, "enabled": False}
    systemctl = which("systemctl")
    if not systemctl:
        return state
    cmd = [systemctl, "show", "nvidia-persistenced.service", "--property=LoadState,ActiveState,UnitFileState"]
    rc, out, err = runner(cmd)
    if rc != 0:
        if any(marker in err for marker in _NO_SYSTEMD):
            return state
        raise CommandError(cmd, rc, out, err)
    props = parse_systemctl_show(out)
    # "masked" points the unit at /dev/null: only the binary then says it is installed.
    state["installed"] = binary or props.get("LoadState", "") not in ("", "not-found", "masked")
    state["active"] = props.get("ActiveState") == "active"
    # "static" units have no [Install] section, so nothing enables them at boot.
    state["enabled"] = props.get("UnitFileState") in ("enabled", "enabled-runtime")
    return state


def _engine(value):
    value = (value or "").strip()
    if not value:
        return None
    return _CONTAINER_ENGINES.get(value, "other")


def container_state(root):
    """Return (is_container, engine) from the marks container engines leave behind."""
    if os.path.exists(_path(root, ".dockerenv")):
        return True, "docker"
    if os.path.exists(_path(root, "run/.containerenv")):
        return True, "podman"
    environ = _read_bytes(_path(root, "proc/1/environ")) or b""
    for item in environ.split(b"\0"):
        if item.startswith(b"container="):
            engine = _engine(item[len(b"container=") :].decode("utf-8", "replace"))
            if engine:
                return True, engine
    engine = _engine(_read(_path(root, "run/systemd/container")))
    if engine:
        return True, engine
    return False, None


_DOCKERD_VERSION = re.compile(r"^Docker version ([0-9]+\.[0-9]+(?:\.[0-9]+)?)")


def docker_version(runner, which):
    """Version of the installed Docker Engine (``dockerd --version``), None when there is none.

    The engine decides how GPUs reach containers: CDI device names need Docker 25 or later.
    """
    dockerd = which("dockerd")
    if not dockerd:
        return None
    cmd = [dockerd, "--version"]
    rc, out, err = runner(cmd)
    if rc != 0:
        raise CommandError(cmd, rc, out, err)
    match = _DOCKERD_VERSION.match(out.strip())
    return match.group(1) if match else None


def collect(root, runner, which):
    """All ``gpu_host`` facts.

    ``runner(argv)`` returns ``(rc, stdout, stderr)``; ``which(name)`` returns the command's
    path or None.  Raises CommandError when a command fails unexpectedly.
    """
    gpus, nvswitches = classify_pci(read_pci_devices(root))
    boot_mode, secure_boot = secure_boot_state(root)
    kernel, headers = kernel_state(root)
    container, engine = container_state(root)
    facts = {"gpus": gpus}
    facts.update(summarize_gpus(gpus))
    facts.update(
        {
            "nvswitch_count": nvswitches,
            "nvswitch_present": nvswitches > 0,
            "secure_boot": secure_boot,
            "boot_mode": boot_mode,
            "kernel": kernel,
            "kernel_headers_installed": headers,
            "nouveau_loaded": nouveau_loaded(root),
            "nvidia_module": nvidia_module_state(root),
            "driver_packages": driver_packages(runner, which),
            "persistenced": persistenced_state(root, runner, which),
            "container": container,
            "container_engine": engine,
            "docker_version": docker_version(runner, which),
        }
    )
    return facts
