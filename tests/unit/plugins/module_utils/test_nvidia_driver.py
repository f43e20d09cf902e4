import pytest
from ansible_collections.gpufleet.node.plugins.module_utils._nvidia_driver import (
    DriverPlanError,
    branch_change,
    branch_of,
    check_flavour,
    driver_plan,
    missing_apt_components,
    os_key,
    packages_to_hold,
    reboot_decision,
)

UBUNTU_2204 = ("Ubuntu", "22.04")
UBUNTU_2404 = ("Ubuntu", "24.04")
DEBIAN_12 = ("Debian", "12")
DEBIAN_13 = ("Debian", "13")
EL_8 = ("EL", "8")
EL_9 = ("EL", "9")


@pytest.mark.parametrize(
    ("facts", "key"),
    [
        (("Debian", "Ubuntu", "24", "24.04"), UBUNTU_2404),
        (("Debian", "Ubuntu", "22", "22.04"), UBUNTU_2204),
        (("Debian", "Debian", "12", "12.12"), DEBIAN_12),
        (("Debian", "Debian", "13", "13.2"), DEBIAN_13),
        (("RedHat", "Rocky", "9", "9.6"), EL_9),
        (("RedHat", "RedHat", "8", "8.10"), EL_8),
        (("RedHat", "AlmaLinux", "9", "9.4"), EL_9),
    ],
)
def test_os_key_from_ansible_facts(facts, key):
    assert os_key(*facts) == key


# The mapping: OS x method x flavour -> the packages a sysadmin would install by hand.
@pytest.mark.parametrize(
    ("key", "method", "flavour", "branch", "version", "packages"),
    [
        (UBUNTU_2204, "distro", "open", "580", "", ["nvidia-driver-580-server-open", "nvidia-utils-580-server"]),
        (UBUNTU_2404, "distro", "open", "580", "", ["nvidia-driver-580-server-open", "nvidia-utils-580-server"]),
        (UBUNTU_2404, "distro", "proprietary", "570", "", ["nvidia-driver-570-server", "nvidia-utils-570-server"]),
        (UBUNTU_2404, "distro", "open", "580", "580.95.05-0ubuntu0.24.04.2",
         ["nvidia-driver-580-server-open=580.95.05-0ubuntu0.24.04.2",
          "nvidia-utils-580-server=580.95.05-0ubuntu0.24.04.2"]),
        (UBUNTU_2204, "cuda_repo", "open", "580", "", ["nvidia-open-580"]),
        (UBUNTU_2404, "cuda_repo", "proprietary", "580", "", ["cuda-drivers-580"]),
        (DEBIAN_12, "cuda_repo", "open", "580", "", ["nvidia-open-580"]),
        (DEBIAN_12, "distro", "open", "535", "535.261.03-1",
         ["nvidia-driver=535.261.03-1", "nvidia-open-kernel-dkms=535.261.03-1", "nvidia-smi=535.261.03-1",
          "nvidia-persistenced"]),
        (DEBIAN_12, "distro", "proprietary", "535", "",
         ["nvidia-driver", "nvidia-kernel-dkms", "nvidia-smi", "nvidia-persistenced"]),
        (EL_8, "cuda_repo", "open", "580", "", ["@nvidia-driver:580-open/default"]),
        (EL_9, "cuda_repo", "open", "580", "", ["@nvidia-driver:580-open/default"]),
        (EL_9, "cuda_repo", "proprietary", "570", "", ["@nvidia-driver:570-dkms/default"]),
    ],
)
def test_package_mapping(key, method, flavour, branch, version, packages):
    plan = driver_plan(key, method, branch, flavour, version=version)
    assert plan["packages"] == packages
    assert plan["manager"] == ("dnf" if key[0] == "EL" else "apt")


def test_debian_distro_pins_every_binary_of_the_driver_sources_and_enables_components():
    plan = driver_plan(DEBIAN_12, "distro", "535", "open", version="535.261.03-1", kernel="6.1.0-40-amd64")
    assert plan["apt_pin"] == {
        "sources": ["nvidia-graphics-drivers", "nvidia-open-gpu-kernel-modules"],
        "version": "535.261.03-1",
    }
    assert plan["debian_components"] == ["contrib", "non-free", "non-free-firmware"]
    assert plan["headers_packages"] == ["linux-headers-6.1.0-40-amd64", "linux-headers-amd64"]


def test_debian_proprietary_pins_the_branch_when_no_version_is_given():
    plan = driver_plan(DEBIAN_12, "distro", "535", "proprietary")
    assert plan["apt_pin"] == {"sources": ["nvidia-graphics-drivers"], "version": "535.*"}


def test_container_gets_no_running_kernel_headers():
    plan = driver_plan(DEBIAN_12, "distro", "535", "open", version="535.261.03-1", kernel="", arch="arm64")
    assert plan["headers_packages"] == ["linux-headers-arm64"]


@pytest.mark.parametrize(
    ("key", "method", "expected"),
    [
        (UBUNTU_2404, "distro", ["nvidia-fabricmanager-580", "libnvidia-nscq-580"]),
        (UBUNTU_2204, "cuda_repo", ["nvidia-fabricmanager-580"]),
        (EL_9, "cuda_repo", ["@nvidia-driver:580-open/fm"]),
    ],
)
def test_fabric_manager_only_when_asked_for(key, method, expected):
    assert driver_plan(key, method, "580", "open", fabricmanager=True)["fabricmanager_packages"] == expected
    assert driver_plan(key, method, "580", "open", fabricmanager=False)["fabricmanager_packages"] == []


def test_fabric_manager_is_pinned_to_the_driver_version():
    plan = driver_plan(UBUNTU_2404, "distro", "580", "open", version="580.95.05-0ubuntu0.24.04.2", fabricmanager=True)
    assert plan["fabricmanager_packages"][0] == "nvidia-fabricmanager-580=580.95.05-0ubuntu0.24.04.2"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((EL_9, "distro", "580", "open"), {}, "nvidia_driver_method: cuda_repo"),
        ((DEBIAN_12, "distro", "580", "open"), {"version": "580.95.05-1"}, "nvidia_driver_branch: '535'"),
        ((DEBIAN_12, "distro", "535", "open"), {}, "nvidia_driver_version"),
        ((DEBIAN_12, "distro", "535", "proprietary"), {"fabricmanager": True}, "fabric manager"),
        ((UBUNTU_2404, "snap", "580", "open"), {}, "nvidia_driver_method must be one of"),
        ((UBUNTU_2404, "distro", "580", "closed"), {}, "nvidia_driver_flavour must be one of"),
        ((UBUNTU_2404, "distro", "58x", "open"), {}, "nvidia_driver_branch must be"),
        ((UBUNTU_2404, "distro", "580", "open"), {"version": "570.172.08-1"}, "not on nvidia_driver_branch 580"),
        ((("Ubuntu", "20.04"), "distro", "580", "open"), {}, "this host is Ubuntu 20.04"),
    ],
)
def test_bad_input_names_the_variable(args, kwargs, message):
    with pytest.raises(DriverPlanError, match=message):
        driver_plan(*args, **kwargs)


def test_hold_list_is_the_driver_and_not_the_container_toolkit():
    installed = [
        "nvidia-driver-580-server-open", "libnvidia-compute-580-server", "nvidia-utils-580-server",
        "nvidia-kernel-common-580-server", "linux-modules-nvidia-580-server-open-6.8.0-85-generic",
        "nvidia-container-toolkit", "libnvidia-container1", "libnvidia-container-tools",
        "docker.io", "linux-image-generic", "firmware-nvidia-gsp", "libcuda1", "xserver-xorg-video-nvidia",
    ]
    assert packages_to_hold(installed) == [
        "firmware-nvidia-gsp", "libcuda1", "libnvidia-compute-580-server",
        "linux-modules-nvidia-580-server-open-6.8.0-85-generic", "nvidia-driver-580-server-open",
        "nvidia-kernel-common-580-server", "nvidia-utils-580-server", "xserver-xorg-video-nvidia",
    ]


@pytest.mark.parametrize(
    ("version", "branch"),
    [("580.95.05", "580"), ("580.95.05-0ubuntu0.24.04.2", "580"), ("3:575.51-1.el9", "575"),
     ("535.261.03-1", "535"), ("", None), (None, None), ("garbage", None)],
)
def test_branch_of(version, branch):
    assert branch_of(version) == branch


@pytest.mark.parametrize(
    ("installed", "branch", "expected"),
    [(None, "580", "none"), ("580.95.05-1", "580", "same"), ("570.172.08-1", "580", "upgrade")],
)
def test_branch_change(installed, branch, expected):
    assert branch_change(installed, branch) == expected


def test_downgrade_is_refused_unless_allowed():
    with pytest.raises(DriverPlanError, match="nvidia_driver_allow_downgrade"):
        branch_change("580.95.05-1", "570")
    assert branch_change("580.95.05-1", "570", allow_downgrade=True) == "downgrade"


H100_HOST = {"container": False, "gpu_count": 8, "nouveau_loaded": False,
             "nvidia_module": {"loaded": True, "version": "580.95.05", "flavour": "open"}}


def host(**changes):
    return {**H100_HOST, **changes}


@pytest.mark.parametrize(
    ("policy", "facts", "installed", "changed", "reboot", "reason"),
    [
        ("auto", host(), "580.95.05-0ubuntu0.24.04.2", False, False, "already is 580.95.05"),
        ("auto", host(), "580.105.08-0ubuntu0.24.04.1", True, True, "loaded module is 580.95.05"),
        ("auto", host(nvidia_module={"loaded": False, "version": None, "flavour": None}), "580.95.05-1", True,
         True, "no NVIDIA module is loaded"),
        ("auto", host(nouveau_loaded=True, nvidia_module={"loaded": False}), "580.95.05-1", True, True, "nouveau"),
        ("auto", host(gpu_count=0, nvidia_module={"loaded": False}), "580.95.05-1", True, False, "no NVIDIA GPU"),
        ("auto", host(container=True, nvidia_module={"loaded": False}), "535.261.03-1", True, False, "container"),
        ("always", host(container=True), "535.261.03-1", True, False, "container"),
        ("never", host(), "580.105.08-1", True, False, "never"),
        ("always", host(), "580.95.05-1", False, False, "nothing changed"),
        ("always", host(), "580.95.05-1", True, True, "driver changed"),
        ("auto", host(), "3:580.95.05-1.el9", False, False, "already is"),
        ("auto", host(), None, False, False, "no NVIDIA driver"),
    ],
)
def test_reboot_decision(policy, facts, installed, changed, reboot, reason):
    decided, why = reboot_decision(policy, facts, installed, changed)
    assert decided is reboot
    assert reason in why


def test_unknown_reboot_policy_is_refused():
    with pytest.raises(DriverPlanError, match="nvidia_driver_reboot must be one of"):
        reboot_decision("sometimes", H100_HOST, "580.95.05", True)


INDEXTARGETS_MAIN_ONLY = """\
bookworm main /etc/apt/sources.list:1
bookworm main /etc/apt/sources.list:1
bookworm-updates main /etc/apt/sources.list:2
"""


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        (INDEXTARGETS_MAIN_ONLY, ["contrib", "non-free", "non-free-firmware"]),
        (INDEXTARGETS_MAIN_ONLY + "bookworm non-free-firmware /etc/apt/sources.list:1\n", ["contrib", "non-free"]),
        # what the role wrote itself does not count: the answer stays the same on a re-run
        (INDEXTARGETS_MAIN_ONLY + "bookworm contrib /etc/apt/sources.list.d/gpufleet-nvidia.sources:1\n",
         ["contrib", "non-free", "non-free-firmware"]),
        ("bookworm main /etc/apt/sources.list.d/debian.sources:1\nbookworm contrib /etc/apt/sources.list.d/"
         "debian.sources:1\nbookworm non-free /etc/apt/sources.list.d/debian.sources:1\n"
         "bookworm non-free-firmware /etc/apt/sources.list.d/debian.sources:1\n", []),
        ("trixie contrib /etc/apt/sources.list:1\n", ["contrib", "non-free", "non-free-firmware"]),
        ("", ["contrib", "non-free", "non-free-firmware"]),
    ],
)
def test_missing_apt_components(text, missing):
    wanted = ["contrib", "non-free", "non-free-firmware"]
    ours = "/etc/apt/sources.list.d/gpufleet-nvidia.sources"
    assert missing_apt_components(text, "bookworm", wanted, ours) == missing


HGX_B200 = {"gpu_models": ["B200"], "architectures": ["blackwell"], "open_modules_required": True,
            "open_modules_supported": True}
DGX_V100 = {"gpu_models": ["V100 SXM2 32GB"], "architectures": ["volta"], "open_modules_required": False,
            "open_modules_supported": False}
HGX_H100 = {"gpu_models": ["H100 SXM5 80GB"], "architectures": ["hopper"], "open_modules_required": False,
            "open_modules_supported": True}
NO_GPU = {"gpu_models": [], "architectures": [], "open_modules_required": False, "open_modules_supported": True}


@pytest.mark.parametrize(
    ("flavour", "facts", "message"),
    [
        ("proprietary", HGX_B200, "proprietary cannot drive B200: blackwell GPUs need the open kernel modules"),
        ("open", DGX_V100, "open cannot drive V100 SXM2 32GB: the open kernel modules need Turing"),
    ],
)
def test_flavour_that_cannot_drive_the_gpus_is_refused(flavour, facts, message):
    with pytest.raises(DriverPlanError, match=message):
        check_flavour(flavour, facts)


@pytest.mark.parametrize(
    ("flavour", "facts"),
    [("open", HGX_B200), ("proprietary", DGX_V100), ("open", HGX_H100), ("proprietary", HGX_H100),
     ("open", NO_GPU), ("proprietary", NO_GPU)],
)
def test_flavour_that_fits_is_accepted(flavour, facts):
    assert check_flavour(flavour, facts) == flavour


def test_debian_13_is_refused_before_any_change_with_the_reason():
    """Its archive's 550 driver does not build for its current kernel (the lab's DKMS build)."""
    for flavour, version in (("open", "550.163.01-2"), ("proprietary", "")):
        with pytest.raises(DriverPlanError, match=r"do not build for Debian 13's current kernel 6\.12\.117"):
            driver_plan(DEBIAN_13, "distro", "550", flavour, version=version)
    with pytest.raises(DriverPlanError, match="cuda_repo is not available for Debian 13"):
        driver_plan(DEBIAN_13, "cuda_repo", "580", "open")
