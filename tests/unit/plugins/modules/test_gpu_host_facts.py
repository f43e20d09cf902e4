"""gpu_host_facts: the facts read from fixture trees shaped like real hosts, and the module itself.

Each case under tests/unit/fixtures/gpu_host/ holds ``root/`` (the files the module reads, as
the host has them) and ``commands/<tool>.{stdout,stderr,rc}`` (what dpkg-query, rpm and
systemctl printed there).  A tool is "installed" when the case has a file for it.  The tree
keeps no name Windows refuses and no symlink (ansible-test sanity's no-illegal-filenames and
symlinks checks): a ``:`` in a name is written ``%3A`` (``0000%3A07%3A00.0`` is PCI address
0000:07:00.0), and the host's links are listed in ``symlinks.yml``; ``host_root`` builds the
tree as the host has it.
"""

import json
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:   # ansible-core < 2.19 (the oldest release the collection claims, 2.17)
    import contextlib

    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args):
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved
from ansible_collections.gpufleet.node.plugins.module_utils import _gpu_host
from ansible_collections.gpufleet.node.plugins.module_utils._gpu_host import (
    GPU_MODELS,
    CommandError,
    collect,
    driver_packages,
    kernel_state,
    main_driver_package,
    nvidia_module_state,
    parse_dpkg,
    parse_rpm,
    persistenced_state,
    secure_boot_state,
)
from ansible_collections.gpufleet.node.plugins.modules import gpu_host_facts

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gpu_host"
GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SYSTEMCTL_SHOW = ["show", "nvidia-persistenced.service", "--property=LoadState,ActiveState,UnitFileState"]
EXPECTED_COMMANDS = {
    "dpkg-query": ["-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", "*nvidia*"],
    "rpm": ["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"],
    "systemctl": SYSTEMCTL_SHOW,
    "dockerd": ["--version"],
}


class FakeHost:
    """``which`` and ``runner`` answering from a fixture case's commands/ folder (or a dict)."""

    def __init__(self, commands=None, case=None):
        self.commands = dict(commands or {})
        if case:
            for path in (FIXTURES / case / "commands").glob("*.stdout"):
                tool = path.name.removesuffix(".stdout")
                rc_file, err_file = path.with_suffix(".rc"), path.with_suffix(".stderr")
                self.commands[tool] = (
                    int(rc_file.read_text()) if rc_file.exists() else 0,
                    path.read_text(),
                    err_file.read_text() if err_file.exists() else "",
                )
        self.calls = []

    def which(self, name):
        return f"/usr/bin/{name}" if name in self.commands else None

    def runner(self, args):
        self.calls.append(args)
        tool = args[0].rsplit("/", 1)[-1]
        assert args[1:] == EXPECTED_COMMANDS[tool]
        return self.commands[tool]


def gpu(bus_id, device_id, name, architecture, open_modules, numa_node, known=True):
    return {
        "bus_id": bus_id,
        "vendor_id": "0x10de",
        "device_id": device_id,
        "class": "0x030200",
        "name": name,
        "architecture": architecture,
        "known": known,
        "open_modules": open_modules,
        "numa_node": numa_node,
    }


UBUNTU_580 = "580.95.05-0ubuntu0.24.04.2"
EL_570 = "570.172.08-1.el9"
NOT_FOUND = {"installed": False, "active": False, "enabled": False}

EXPECTED = {
    "hgx_h100": {
        "gpus": [
            gpu(f"0000:{bus}:00.0", "0x2330", "H100 SXM5 80GB", "hopper", "preferred", numa)
            for bus, numa in (("1b", 0), ("43", 0), ("52", 0), ("61", 0), ("9d", 1), ("c3", 1), ("d1", 1), ("df", 1))
        ],
        "gpu_count": 8,
        "gpu_models": ["H100 SXM5 80GB"],
        "architectures": ["hopper"],
        "open_modules_required": False,
        "open_modules_supported": True,
        "nvswitch_count": 4,
        "nvswitch_present": True,
        "secure_boot": "disabled",
        "boot_mode": "efi",
        "kernel": "6.8.0-85-generic",
        "kernel_headers_installed": True,
        "nouveau_loaded": False,
        "nvidia_module": {"loaded": True, "version": "580.95.05", "flavour": "open"},
        "driver_packages": {
            "manager": "dpkg",
            "version": UBUNTU_580,
            # removed ("rc"), never-installed ("un") and container-toolkit packages are left out
            "packages": {
                "libnvidia-cfg1-580-server": UBUNTU_580,
                "libnvidia-common-580-server": UBUNTU_580,
                "libnvidia-compute-580-server": UBUNTU_580,
                "libnvidia-nscq-580": UBUNTU_580,
                "nvidia-compute-utils-580-server": UBUNTU_580,
                "nvidia-dkms-580-server-open": UBUNTU_580,
                "nvidia-driver-580-server-open": UBUNTU_580,
                "nvidia-fabricmanager-580": UBUNTU_580,
                "nvidia-firmware-580-server-580.95.05": UBUNTU_580,
                "nvidia-kernel-common-580-server": UBUNTU_580,
                "nvidia-kernel-source-580-server-open": UBUNTU_580,
                "nvidia-utils-580-server": UBUNTU_580,
            },
        },
        "persistenced": {"installed": True, "active": True, "enabled": True},
        "container": False,
        "container_engine": None,
        "docker_version": "28.5.2",
    },
    "pcie_l40s": {
        "gpus": [
            gpu("0000:4b:00.0", "0x26b9", "L40S", "ada", "preferred", 0),
            gpu("0000:ca:00.0", "0x26b9", "L40S", "ada", "preferred", 1),
        ],
        "gpu_count": 2,
        "gpu_models": ["L40S"],
        "architectures": ["ada"],
        "open_modules_required": False,
        "open_modules_supported": True,
        "nvswitch_count": 0,
        "nvswitch_present": False,
        "secure_boot": "enabled",
        "boot_mode": "efi",
        "kernel": "5.14.0-570.42.2.el9_6.x86_64",
        "kernel_headers_installed": True,
        "nouveau_loaded": False,
        "nvidia_module": {"loaded": True, "version": "570.172.08", "flavour": "proprietary"},
        "driver_packages": {
            "manager": "rpm",
            "version": "570.172.08-1",
            "packages": {
                "cuda-drivers": "570.172.08-1",
                "kmod-nvidia-latest-dkms": EL_570,
                "nvidia-driver": EL_570,
                "nvidia-driver-cuda": EL_570,
                "nvidia-driver-cuda-libs": EL_570,
                "nvidia-driver-libs": EL_570,
                "nvidia-kmod-common": EL_570,
                "nvidia-libXNVCtrl": EL_570,
                "nvidia-modprobe": EL_570,
                "nvidia-persistenced": EL_570,
                "nvidia-settings": EL_570,
            },
        },
        "persistenced": {"installed": True, "active": True, "enabled": True},
        "container": False,
        "container_engine": None,
        "docker_version": None,
    },
    "no_gpu": {
        "gpus": [],
        "gpu_count": 0,
        "gpu_models": [],
        "architectures": [],
        "open_modules_required": False,
        "open_modules_supported": True,
        "nvswitch_count": 0,
        "nvswitch_present": False,
        "secure_boot": "disabled",
        "boot_mode": "bios",
        "kernel": "6.1.0-18-amd64",
        "kernel_headers_installed": False,
        "nouveau_loaded": False,
        "nvidia_module": {"loaded": False, "version": None, "flavour": None},
        "driver_packages": {"manager": "dpkg", "version": None, "packages": {}},
        "persistenced": NOT_FOUND,
        "container": False,
        "container_engine": None,
        "docker_version": None,
    },
    "container": {
        "gpus": [],
        "gpu_count": 0,
        "gpu_models": [],
        "architectures": [],
        "open_modules_required": False,
        "open_modules_supported": True,
        "nvswitch_count": 0,
        "nvswitch_present": False,
        "secure_boot": "disabled",
        "boot_mode": "bios",
        "kernel": "6.18.44-fc-v595",
        "kernel_headers_installed": False,
        "nouveau_loaded": False,
        "nvidia_module": {"loaded": False, "version": None, "flavour": None},
        "driver_packages": {"manager": "dpkg", "version": None, "packages": {}},
        "persistenced": NOT_FOUND,
        "container": True,
        "container_engine": "docker",
        "docker_version": "20.10.24",
    },
}


def host_root(case, tmp_path):
    """The case's ``root/`` copied under tmp_path with its real names and its links."""
    source, root = FIXTURES / case / "root", tmp_path / "root"
    for path in sorted(source.rglob("*")):
        target = root / unquote(path.relative_to(source).as_posix())
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    links = FIXTURES / case / "symlinks.yml"
    for link, points_to in (yaml.safe_load(links.read_text()) if links.exists() else {}).items():
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(points_to)
    return str(root)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_fixture_hosts(case, tmp_path):
    host = FakeHost(case=case)
    assert collect(host_root(case, tmp_path), host.runner, host.which) == EXPECTED[case]


def _documented_keys(contains):
    return {key: _documented_keys(spec["contains"]) if "contains" in spec else None for key, spec in contains.items()}


def _fact_keys(value, documented):
    if isinstance(documented, dict) and isinstance(value, dict):
        return {key: _fact_keys(value[key], documented.get(key)) for key in value}
    if isinstance(documented, dict) and isinstance(value, list) and value:
        return _fact_keys(value[0], documented)
    return None


def test_facts_carry_exactly_the_documented_keys():
    documented = _documented_keys(yaml.safe_load(gpu_host_facts.RETURN)["ansible_facts"]["contains"])["gpu_host"]
    facts = EXPECTED["hgx_h100"]
    assert _fact_keys(facts, documented) == documented


# ---------------------------------------------------------------- GPUs on synthetic PCI trees


def make_pci(root, bus_id, vendor, device, pci_class, numa="-1", subsystem=None):
    path = root / "sys" / "bus" / "pci" / "devices" / bus_id
    path.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("device", device), ("class", pci_class), ("numa_node", numa)):
        (path / name).write_text(value + "\n")
    if subsystem:
        (path / "subsystem_vendor").write_text(subsystem[0] + "\n")
        (path / "subsystem_device").write_text(subsystem[1] + "\n")


def facts_for(tmp_path, *devices):
    for device in devices:
        make_pci(tmp_path, *device)
    host = FakeHost()
    return collect(str(tmp_path), host.runner, host.which)


def test_unknown_nvidia_id_is_counted_but_not_named(tmp_path):
    facts = facts_for(tmp_path, ("0000:65:00.0", "0x10de", "0x1234", "0x030200", "0"))
    assert facts["gpus"] == [gpu("0000:65:00.0", "0x1234", "unknown (0x1234)", "unknown", "unknown", 0, known=False)]
    assert facts["architectures"] == ["unknown"]
    # nothing says an unknown GPU is Turing or newer
    assert facts["open_modules_supported"] is False
    assert facts["open_modules_required"] is False


def test_blackwell_requires_the_open_modules(tmp_path):
    facts = facts_for(
        tmp_path,
        ("0000:1b:00.0", "0x10de", "0x2901", "0x030200", "0"),
        ("0000:43:00.0", "0x10de", "0x2901", "0x030200", "0"),
    )
    assert facts["gpu_models"] == ["B200"]
    assert facts["open_modules_required"] is True
    assert facts["open_modules_supported"] is True
    # HGX B200 NVSwitches sit behind a ConnectX-7 bridge, not on the host's PCI bus
    assert facts["nvswitch_present"] is False


def test_grace_hopper_requires_the_open_modules(tmp_path):
    facts = facts_for(tmp_path, ("0009:01:00.0", "0x10de", "0x2342", "0x030200", "1"))
    assert facts["gpus"][0]["architecture"] == "hopper"
    assert facts["gpus"][0]["open_modules"] == "required"
    assert facts["open_modules_required"] is True


def test_volta_beside_hopper_cannot_run_the_open_modules(tmp_path):
    facts = facts_for(
        tmp_path,
        ("0000:18:00.0", "0x10de", "0x1db5", "0x030200", "0"),
        ("0000:3b:00.0", "0x10de", "0x2330", "0x030200", "0"),
    )
    assert [g["open_modules"] for g in facts["gpus"]] == ["unsupported", "preferred"]
    assert facts["architectures"] == ["hopper", "volta"]
    assert facts["gpu_models"] == ["H100 SXM5 80GB", "V100 SXM2 32GB"]
    assert facts["open_modules_supported"] is False
    assert facts["open_modules_required"] is False


@pytest.mark.parametrize(
    ("subsystem", "name"),
    [(("0x10de", "0x14a9"), "A16"), (("0x10de", "0x157e"), "A2"), (None, "A2 / A16")],
)
def test_a2_and_a16_share_an_id_and_differ_by_subsystem(tmp_path, subsystem, name):
    facts = facts_for(tmp_path, ("0000:17:00.0", "0x10de", "0x25b6", "0x030200", "0", subsystem))
    assert facts["gpus"][0]["name"] == name
    assert facts["gpus"][0]["known"] is True


@pytest.mark.parametrize(
    ("vendor", "device", "pci_class", "gpus", "nvswitches"),
    [
        ("0x10de", "0x2330", "0x030200", 1, 0),  # 3D controller
        ("0x10de", "0x26b1", "0x030000", 1, 0),  # VGA (workstation card with outputs)
        ("0x10de", "0x22a3", "0x068000", 0, 1),  # H100-generation NVSwitch
        ("0x10de", "0x1af1", "0x068000", 0, 1),  # A100-generation NVSwitch
        ("0x10de", "0x22e8", "0x040300", 0, 0),  # NVIDIA HD audio function
        ("0x10de", "0x1ad8", "0x0c0330", 0, 0),  # NVIDIA USB controller
        ("0x1a03", "0x2000", "0x030000", 0, 0),  # ASPEED BMC VGA
        ("0x1002", "0x74a1", "0x038000", 0, 0),  # AMD accelerator
    ],
)
def test_only_nvidia_display_functions_are_gpus(tmp_path, vendor, device, pci_class, gpus, nvswitches):
    facts = facts_for(tmp_path, ("0000:01:00.0", vendor, device, pci_class))
    assert (facts["gpu_count"], facts["nvswitch_count"]) == (gpus, nvswitches)


def test_gpus_sort_by_pci_address_and_numa_minus_one_is_null(tmp_path):
    facts = facts_for(
        tmp_path,
        ("0000:c3:00.0", "0x10de", "0x2330", "0x030200", "1"),
        ("0000:1b:00.0", "0x10de", "0x2330", "0x030200", "-1"),
        ("0001:05:00.0", "0x10de", "0x2330", "0x030200", "0"),
    )
    assert [g["bus_id"] for g in facts["gpus"]] == ["0000:1b:00.0", "0000:c3:00.0", "0001:05:00.0"]
    assert [g["numa_node"] for g in facts["gpus"]] == [None, 1, 0]


@pytest.mark.parametrize(
    ("device_id", "architecture"),
    [("0x1eb8", "turing"), ("0x20b2", "ampere"), ("0x27b8", "ada"), ("0x2335", "hopper"), ("0x2bb5", "blackwell")],
)
def test_table_spot_checks(device_id, architecture):
    assert GPU_MODELS[device_id][1] == architecture


def test_table_ids_are_lowercase_sysfs_form():
    assert all(len(key) == 6 and key == key.lower() and key.startswith("0x") for key in GPU_MODELS)
    assert {arch for _name, arch in GPU_MODELS.values()} <= set(_gpu_host.OPEN_MODULES)


# ---------------------------------------------------------------- boot, kernel, modules


@pytest.mark.parametrize(
    ("variable", "populated", "expected"),
    [
        (b"\x06\x00\x00\x00\x01", True, "enabled"),
        (b"\x06\x00\x00\x00\x00", True, "disabled"),
        (b"\x06\x00\x00", True, "unknown"),  # truncated
        (None, True, "disabled"),  # firmware without Secure Boot
        (None, False, "unknown"),  # efivarfs not mounted
    ],
)
def test_secure_boot_from_efivars(tmp_path, variable, populated, expected):
    efivars = tmp_path / "sys" / "firmware" / "efi" / "efivars"
    efivars.mkdir(parents=True)
    if populated:
        (efivars / f"BootCurrent-{GUID}").write_bytes(b"\x06\x00\x00\x00\x01\x00")
    if variable is not None:
        (efivars / f"SecureBoot-{GUID}").write_bytes(variable)
    assert secure_boot_state(str(tmp_path)) == ("efi", expected)


def test_secure_boot_from_legacy_efi_vars(tmp_path):
    data = tmp_path / "sys" / "firmware" / "efi" / "vars" / f"SecureBoot-{GUID}" / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"\x01")
    assert secure_boot_state(str(tmp_path)) == ("efi", "enabled")


def test_bios_boot_has_no_secure_boot(tmp_path):
    assert secure_boot_state(str(tmp_path)) == ("bios", "disabled")


def _kernel(tmp_path, release="5.14.0-570.42.2.el9_6.x86_64"):
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text(release + "\n")
    modules = tmp_path / "lib" / "modules" / release
    modules.mkdir(parents=True)
    return modules


def test_dangling_headers_link_means_no_headers(tmp_path):
    # EL's kernel-core ships the build link; it dangles until kernel-devel is installed.
    release = "5.14.0-570.42.2.el9_6.x86_64"
    (_kernel(tmp_path, release) / "build").symlink_to(f"/usr/src/kernels/{release}")
    assert kernel_state(str(tmp_path)) == (release, False)
    (tmp_path / "usr" / "src" / "kernels" / release).mkdir(parents=True)
    assert kernel_state(str(tmp_path)) == (release, True)


def test_headers_link_is_resolved_inside_root_not_on_this_machine(tmp_path):
    # An absolute target that exists here (/) must not count for the tree under test.
    (_kernel(tmp_path, "6.1.0-18-amd64") / "build").symlink_to("/")
    assert kernel_state(str(tmp_path)) == ("6.1.0-18-amd64", True)  # root of the tree itself
    (tmp_path / "lib" / "modules" / "6.1.0-18-amd64" / "build").unlink()
    (tmp_path / "lib" / "modules" / "6.1.0-18-amd64" / "build").symlink_to("/usr/lib/os-release")
    assert kernel_state(str(tmp_path)) == ("6.1.0-18-amd64", False)


def test_headers_link_loop_is_no_headers(tmp_path):
    build = _kernel(tmp_path, "6.8.0-85-generic") / "build"
    build.symlink_to("build")
    assert kernel_state(str(tmp_path)) == ("6.8.0-85-generic", False)


def test_nvidia_module_without_version_file(tmp_path):
    (tmp_path / "sys" / "module" / "nvidia").mkdir(parents=True)
    assert nvidia_module_state(str(tmp_path)) == {"loaded": True, "version": None, "flavour": None}


@pytest.mark.parametrize(
    ("text", "version", "flavour"),
    [
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.95.05  Release Build"
            "  (dvs-builder@U22-I3-AE18-23-3)  Tue Sep 23 09:48:04 UTC 2025\n",
            "580.95.05",
            "open",
        ),
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n",
            "550.54.14",
            "proprietary",
        ),
    ],
)
def test_nvidia_version_from_proc_when_sysfs_has_none(tmp_path, text, version, flavour):
    proc = tmp_path / "proc" / "driver" / "nvidia"
    proc.mkdir(parents=True)
    (proc / "version").write_text(text)
    assert nvidia_module_state(str(tmp_path)) == {"loaded": True, "version": version, "flavour": flavour}


@pytest.mark.parametrize(
    ("marks", "engine"),
    [
        ({".dockerenv": b""}, "docker"),
        ({"run/.containerenv": b'engine="podman-5.4.0"\n'}, "podman"),
        ({"proc/1/environ": b"container=lxc\0TERM=linux\0"}, "lxc"),
        ({"proc/1/environ": b"PATH=/bin\0container=systemd-nspawn\0"}, "systemd-nspawn"),
        ({"run/systemd/container": b"podman\n"}, "podman"),
        ({"run/systemd/container": b"wsl\n"}, "other"),
        ({"proc/1/environ": b"HOME=/\0TERM=linux\0"}, None),
    ],
)
def test_container_engine(tmp_path, marks, engine):
    for name, content in marks.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    facts = facts_for(tmp_path)
    assert (facts["container"], facts["container_engine"]) == (engine is not None, engine)


def test_nouveau_seen_in_sysfs_or_proc_modules(tmp_path):
    assert facts_for(tmp_path)["nouveau_loaded"] is False
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "modules").write_text("nouveau 2895872 2 - Live 0x0000000000000000\n")
    assert facts_for(tmp_path)["nouveau_loaded"] is True


# ---------------------------------------------------------------- packages and services


def test_dpkg_keeps_installed_and_held_packages_only():
    text = (
        "nvidia-driver-580-open\t580.95.05-0ubuntu1\tii \n"
        "nvidia-fabricmanager-580\t580.95.05-1\thi \n"
        "nvidia-driver-570-open\t570.172.08-0ubuntu1\trc \n"
        "nvidia-driver-590-open\t\tun \n"
        "nvidia-container-toolkit\t1.17.8-1\tii \n"
    )
    assert parse_dpkg(text) == {
        "nvidia-driver-580-open": "580.95.05-0ubuntu1",
        "nvidia-fabricmanager-580": "580.95.05-1",
    }


def test_rpm_keeps_driver_packages_only():
    text = (
        "bash\t5.1.8-9.el9\nnvidia-open\t580.95.05-1.el9\ncuda-drivers-580\t580.95.05-1\ncuda-toolkit-12-8\t12.8.1-1\n"
    )
    assert parse_rpm(text) == {"nvidia-open": "580.95.05-1.el9", "cuda-drivers-580": "580.95.05-1"}


@pytest.mark.parametrize(
    ("manager", "names", "main"),
    [
        ("dpkg", ["nvidia-driver-580-server-open", "nvidia-utils-580-server"], "nvidia-driver-580-server-open"),
        ("dpkg", ["nvidia-driver-570-server", "nvidia-driver-580-open"], "nvidia-driver-580-open"),
        ("dpkg", ["nvidia-driver", "nvidia-kernel-dkms", "nvidia-open"], "nvidia-driver"),  # Debian
        ("dpkg", ["nvidia-open", "nvidia-driver-580-open"], "nvidia-driver-580-open"),  # NVIDIA's repo
        ("dpkg", ["nvidia-utils-580-server"], None),
        ("rpm", ["nvidia-driver", "nvidia-open", "cuda-drivers"], "nvidia-open"),
        ("rpm", ["nvidia-driver", "cuda-drivers"], "cuda-drivers"),
        ("rpm", ["nvidia-driver", "kmod-nvidia-open-dkms"], "nvidia-driver"),
        ("rpm", ["kmod-nvidia-latest-dkms", "nvidia-driver-libs"], "kmod-nvidia-latest-dkms"),
        (None, [], None),
    ],
)
def test_main_driver_package(manager, names, main):
    assert main_driver_package(manager, dict.fromkeys(names, "1")) == main


def test_no_package_manager():
    host = FakeHost()
    assert driver_packages(host.runner, host.which) == {"manager": None, "version": None, "packages": {}}


def test_broken_dpkg_database_is_an_error():
    host = FakeHost({"dpkg-query": (2, "", "dpkg-query: error: parsing file '/var/lib/dpkg/status' near line 9\n")})
    with pytest.raises(CommandError) as info:
        driver_packages(host.runner, host.which)
    assert info.value.rc == 2
    assert info.value.cmd[0] == "/usr/bin/dpkg-query"
    assert "parsing file" in info.value.stderr


@pytest.mark.parametrize(
    ("answer", "binary", "expected"),
    [
        ((0, "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n", ""), False, NOT_FOUND),
        # the .run installer puts the binary in place without a unit
        (
            (0, "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n", ""),
            True,
            {"installed": True, "active": False, "enabled": False},
        ),
        (
            (0, "LoadState=loaded\nActiveState=inactive\nUnitFileState=static\n", ""),
            False,
            {"installed": True, "active": False, "enabled": False},
        ),
        ((0, "LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n", ""), False, NOT_FOUND),
        # a container without systemd as PID 1 (what this module meets in plain docker)
        (
            (
                1,
                "",
                "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
                "Failed to connect to bus: Host is down\n",
            ),
            True,
            {"installed": True, "active": False, "enabled": False},
        ),
    ],
)
def test_persistenced(tmp_path, answer, binary, expected):
    if binary:
        (tmp_path / "usr" / "bin").mkdir(parents=True)
        (tmp_path / "usr" / "bin" / "nvidia-persistenced").write_text("")
    host = FakeHost({"systemctl": answer})
    assert persistenced_state(str(tmp_path), host.runner, host.which) == expected


def test_persistenced_without_systemctl(tmp_path):
    host = FakeHost()
    assert persistenced_state(str(tmp_path), host.runner, host.which) == NOT_FOUND
    assert host.calls == []


def test_systemctl_failing_otherwise_is_an_error(tmp_path):
    host = FakeHost({"systemctl": (1, "", "Failed to get properties: Access denied\n")})
    with pytest.raises(CommandError, match="Access denied"):
        persistenced_state(str(tmp_path), host.runner, host.which)


# ---------------------------------------------------------------- the module


def run_module(monkeypatch, capsys, args, commands):
    host = FakeHost(commands)
    calls = []

    def run_command(self, cmd, environ_update=None, **kwargs):
        calls.append((cmd, environ_update))
        return host.runner(cmd)

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False: host.which(name))
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        gpu_host_facts.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out), calls


def test_module_returns_the_facts_and_never_changes(monkeypatch, capsys, tmp_path):
    commands = FakeHost(case="hgx_h100").commands
    code, result, calls = run_module(
        monkeypatch, capsys, {"root": host_root("hgx_h100", tmp_path), "_ansible_check_mode": True}, commands
    )
    assert code == 0
    assert result["changed"] is False
    assert result["ansible_facts"] == {"gpu_host": EXPECTED["hgx_h100"]}
    assert {tuple(cmd[:1]) for cmd, _env in calls} == {
        ("/usr/bin/dpkg-query",), ("/usr/bin/systemctl",), ("/usr/bin/dockerd",)}
    assert all(env == {"LC_ALL": "C"} for _cmd, env in calls)


def test_module_fails_with_the_command_rc_and_stderr(monkeypatch, capsys, tmp_path):
    commands = {"rpm": (1, "", "error: rpmdb: BDB0113 Thread/process 1234/0 failed\n")}
    code, result, _calls = run_module(monkeypatch, capsys, {"root": host_root("no_gpu", tmp_path)}, commands)
    assert code == 1
    assert result["failed"] is True
    assert result["rc"] == 1
    assert "BDB0113" in result["stderr"]
    assert result["cmd"] == ["/usr/bin/rpm", *EXPECTED_COMMANDS["rpm"]]
