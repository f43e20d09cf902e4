"""What a sysadmin sees on a Debian 12 lab node after gpufleet.node.nvidia_driver ran.

Real Debian non-free packages and a real DKMS build; the node is a container without a
GPU, so loading the module, rebooting and nvidia-smi are skipped by the role, which says why.
"""

import json

import pytest

# What the release's archive carries (inventories/lab/group_vars/gpu_nodes.yml).
PINS = {"bookworm": ("535", "535.261.03-1", "6.1.")}


@pytest.fixture
def release(host):
    """(branch, package version, headers series) of the node's Debian release."""
    return PINS[host.system_info.codename]


def installed_version(host, package):
    result = host.run(f"dpkg-query -W -f '${{Status}} ${{Version}}' {package}")
    # "install ok installed 535.261.03-1", or "hold ok installed ..." once held
    return result.stdout.split()[-1] if result.rc == 0 and " ok installed " in result.stdout else None


def test_debian_components_the_host_lacked_were_added(host):
    sources = host.file("/etc/apt/sources.list.d/gpufleet-nvidia.sources")
    assert sources.exists
    assert "Components: contrib non-free non-free-firmware" in sources.content_string
    # the admin's own sources.list is left as it was
    codename = host.system_info.codename
    sources_list = host.file("/etc/apt/sources.list").content_string.strip()
    assert sources_list == f"deb http://deb.debian.org/debian {codename} main"


@pytest.mark.parametrize("package", ["nvidia-driver", "nvidia-open-kernel-dkms", "nvidia-smi",
                                     "libnvidia-ml1", "firmware-nvidia-gsp"])
def test_driver_packages_at_the_pinned_version(host, release, package):
    assert installed_version(host, package) == release[1]


def test_open_flavour_only(host):
    assert installed_version(host, "nvidia-kernel-dkms") is None


def test_apt_prefers_the_pinned_version_over_newer_security_updates(host, release):
    policy = host.check_output("apt-cache policy nvidia-driver")
    candidate = next(line.split()[-1] for line in policy.splitlines() if "Candidate:" in line)
    assert candidate == release[1]
    assert host.file("/etc/apt/preferences.d/gpufleet-nvidia-driver").contains(f"Pin: version {release[1]}")


def test_headers_came_before_dkms_and_dkms_built_the_open_modules(host, release):
    headers = host.check_output("dpkg-query -W -f '${Version}' linux-headers-amd64")
    assert headers.startswith(release[2])
    status = host.check_output("dkms status")
    assert "installed" in status and "nvidia" in status, status
    kernel = status.split(",")[1].strip()
    assert kernel.startswith(release[2])
    module = host.check_output(f"find /lib/modules/{kernel} -name 'nvidia*.ko*' -path '*dkms*' | sort | head -1")
    assert module, "no nvidia module file was built"
    # the open kernel modules are dual licensed; the proprietary ones say NVIDIA
    assert host.check_output(f"modinfo -F license {module}") == "Dual MIT/GPL"


def test_every_driver_package_is_held(host):
    held = set(host.check_output("apt-mark showhold").split())
    for package in ["nvidia-driver", "nvidia-open-kernel-dkms", "libnvidia-ml1", "nvidia-smi",
                    "firmware-nvidia-gsp", "nvidia-persistenced"]:
        assert package in held
    assert "docker.io" not in held and "linux-headers-amd64" not in held


def test_unattended_upgrades_leave_the_driver_alone(host):
    config = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    assert '"nvidia-"' in config and '"libnvidia-"' in config and '"libcuda"' in config


def test_nouveau_blacklisted(host):
    blacklist = host.file("/etc/modprobe.d/gpufleet-blacklist-nouveau.conf")
    assert blacklist.contains("^blacklist nouveau$")
    assert blacklist.contains("^options nouveau modeset=0$")


def test_persistenced_enabled_but_not_started_without_a_gpu(host):
    persistenced = host.service("nvidia-persistenced")
    assert persistenced.is_enabled
    assert not persistenced.is_running


def test_no_fabric_manager_without_nvswitch(host, release):
    assert installed_version(host, f"nvidia-fabricmanager-{release[0]}") is None
    assert installed_version(host, "nvidia-fabricmanager") is None


def test_host_facts_see_a_container_without_gpus(host, release):
    facts = host.ansible("gpufleet.node.gpu_host_facts", check=False)["ansible_facts"]
    gpu_host = facts["gpu_host"]
    assert gpu_host["container"] is True
    assert gpu_host["gpu_count"] == 0
    assert gpu_host["driver_packages"]["version"] == release[1]


def test_rerun_skips_what_a_container_cannot_do_and_says_why(playbook, limit):
    run = playbook("converge.yml", *limit)
    assert run.clean, run
    assert "No reboot: the host is a container" in run.stdout, run
    assert "nvidia-smi not run: this host is a container" in run.stdout, run


def test_check_mode_on_the_converged_node_reports_no_change(playbook, limit):
    run = playbook("converge.yml", "--check", "--diff", *limit)
    assert run.clean, run


def test_blacklist_change_rebuilds_the_initramfs(host, playbook, limit):
    host.check_output("rm /etc/modprobe.d/gpufleet-blacklist-nouveau.conf")
    run = playbook("converge.yml", *limit)
    assert run.returncode == 0, run
    assert "RUNNING HANDLER [gpufleet.node.nvidia_driver : Rebuild initramfs]" in run.stdout, run
    assert host.file("/etc/modprobe.d/gpufleet-blacklist-nouveau.conf").exists


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"nvidia_driver_branch": "580", "nvidia_driver_version": ""}, "nvidia_driver_branch: 'BRANCH'"),
        ({"nvidia_driver_method": "runfile"}, "nvidia_driver_method"),
        ({"nvidia_driver_cuda_repo_url": "mirror.example.internal/cuda"}, "nvidia_driver_cuda_repo_url must be"),
        ({"nvidia_driver_method": "cuda_repo", "nvidia_driver_branch": "470", "nvidia_driver_version": ""},
         {"bookworm": "would downgrade it: set nvidia_driver_allow_downgrade"}),
        ({"nvidia_driver_reboot": "sometimes"}, "nvidia_driver_reboot"),
    ],
)
def test_bad_input_fails_before_any_change(host, playbook, limit, release, extra, message):
    if isinstance(message, dict):
        message = message[host.system_info.codename]
    message = message.replace("BRANCH", release[0])
    before = host.check_output("ls -l --time-style=+%s /etc/apt/sources.list.d /etc/apt/preferences.d | md5sum")
    run = playbook("converge.yml", "-e", json.dumps(extra), *limit)
    assert run.returncode != 0
    assert message in run.stdout, run
    assert run.unchanged, run
    assert host.check_output("ls -l --time-style=+%s /etc/apt/sources.list.d /etc/apt/preferences.d | md5sum") == before
