"""The NVIDIA Container Toolkit on a lab node with Docker, from the lab's STAND-IN repository.

The stand-in (lab/standin/) serves the four package names at 1.18.0-1 and 1.17.8-1; its
nvidia-container-runtime is a runc shim. No GPU here: the CDI spec and the GPU container check
are skipped by the role, which says why (gpu_handover runs them on a STAND-IN GPU).
"""

import json

import pytest

PACKAGES = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"]
PIN = "1.18.0-1"   # the role default


def test_repository_entry_and_dedicated_keyring(host, lab_www):
    source = host.file("/etc/apt/sources.list.d/gpufleet-nvidia-container-toolkit.sources")
    assert source.contains(f"URIs: {lab_www}/nvidia-container-toolkit-standin/stable/deb/amd64/")
    assert source.contains("Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc")
    assert host.file("/etc/apt/keyrings/nvidia-container-toolkit.asc").contains("BEGIN PGP PUBLIC KEY BLOCK")
    assert not host.file("/etc/apt/sources.list.d/nvidia-docker.list").exists
    # apt trusts the repository through that keyring only
    update = host.run("apt-get update 2>&1")
    assert update.rc == 0 and "NO_PUBKEY" not in update.stdout and "not signed" not in update.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_four_packages_at_the_pin_and_held(host, package):
    status = host.check_output(f"dpkg-query -W -f '${{Status}} ${{Version}}' {package}")
    assert status == f"hold ok installed {PIN}"


def test_daemon_json_holds_the_runtime_and_keys_set_by_others(host, lab_registry):
    settings = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert settings["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    assert settings["max-concurrent-downloads"] == 4          # seeded before any role ran
    assert settings["live-restore"] is True                   # the docker role's
    assert lab_registry in settings["insecure-registries"]    # the lab inventory's
    assert "default-runtime" not in settings


def test_docker_lists_the_nvidia_runtime(host):
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes


def test_container_runs_with_the_nvidia_runtime(host, busybox_image):
    host.check_output(f"docker pull -q {busybox_image}")
    out = host.check_output(f"docker run --rm --runtime nvidia {busybox_image} echo through-nvidia-runtime")
    assert out == "through-nvidia-runtime"
    # and the runtime really is in the path: without its binary the same run fails
    host.check_output("mv /usr/bin/nvidia-container-runtime /root/ncr.keep")
    try:
        assert host.run(f"docker run --rm --runtime nvidia {busybox_image} true").rc != 0
    finally:
        host.check_output("mv /root/ncr.keep /usr/bin/nvidia-container-runtime")


def test_auto_picks_the_hand_over_the_engine_can_do(host):
    """The default (auto): Debian 12's Docker 20.10 cannot take CDI device names, so the nvidia
    runtime hook with the /dev/char links (udev rule); Debian 13's Docker 26 gets CDI."""
    version = host.check_output("dockerd --version")
    settings = json.loads(host.file("/etc/docker/daemon.json").content_string)
    rule = host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules")
    if host.system_info.codename == "bookworm":
        assert version.startswith("Docker version 20.10.")
        assert "cdi" not in settings.get("features", {})
        assert rule.exists and rule.contains("nvidia-ctk system create-dev-char-symlinks --create-all")
    else:
        assert version.startswith("Docker version 26.")
        assert settings["features"]["cdi"] is True
        assert not rule.exists


def test_the_engine_takes_the_hand_over_auto_picked(host, busybox_image):
    """What the services' and the probe's docker run lines meet on this engine without a GPU
    (real dockerd, STAND-IN toolkit: no CDI specification exists without a GPU, and the runtime
    refuses GPUs where no driver is loaded, as NVIDIA's hook does). The scenario gpu_handover
    runs both with the lab's STAND-IN GPU."""
    host.check_output(f"docker pull -q {busybox_image}")
    cdi = host.run(f"docker run --rm --device nvidia.com/gpu=all {busybox_image} true")
    assert cdi.rc == 125, cdi
    if host.system_info.codename == "bookworm":
        # the 20.10 CLI refuses the name itself; a newer CLI gets the 20.10 daemon's refusal
        refusals = ("nvidia.com/gpu=all is not an absolute path", 'could not select device driver "cdi"')
        assert any(text in cdi.stderr for text in refusals), cdi
    else:
        # the engine did select CDI: only the specification (written where a GPU is) is missing
        assert "unresolvable CDI devices nvidia.com/gpu=all" in cdi.stderr, cdi
    # the engine took the runtime path (found the hook, asked the nvidia runtime): no driver here
    hook = host.run(f"docker run --rm --runtime nvidia --gpus all {busybox_image} echo hook-ok")
    assert hook.rc == 125 and "nvml error: driver not loaded" in hook.stderr, hook


def test_cdi_is_refused_before_any_change_on_docker_20_10(host, playbook, limit):
    if host.system_info.codename != "bookworm":
        pytest.skip("Debian 13's Docker 26 takes CDI")
    before = host.check_output("md5sum /etc/docker/daemon.json; ls /etc/udev/rules.d")
    run = playbook("converge.yml", *limit, "-e", '{"nvidia_container_toolkit_nvml_fix": "cdi"}')
    assert run.returncode != 0
    assert "nvidia_container_toolkit_nvml_fix=cdi hands GPUs to containers as CDI devices" in run.stdout, run
    assert "Docker 20.10.24" in run.stdout, run
    assert run.unchanged, run
    assert host.check_output("md5sum /etc/docker/daemon.json; ls /etc/udev/rules.d") == before


def test_rerun_says_why_gpu_steps_are_skipped(playbook, limit):
    run = playbook("converge.yml", *limit)
    assert run.clean, run
    assert "No CDI specification or /dev/char links on" in run.stdout, run
    assert "GPU container check skipped on" in run.stdout, run


def test_check_mode_on_the_converged_node_reports_no_change(playbook, limit):
    run = playbook("converge.yml", *limit, "--check", "--diff")
    assert run.clean, run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"nvidia_container_toolkit_version": "1.18.1-1"},
         "1.18.1-1 is not in"),
        ({"nvidia_container_toolkit_version": "1.18.0"},
         "nvidia_container_toolkit_version must be a full package version"),
        ({"nvidia_container_toolkit_repo_key_url": ""},
         "set nvidia_container_toolkit_repo_key_url to the key that signs it"),
        ({"nvidia_container_toolkit_nvml_fix": "udev"},
         "nvidia_container_toolkit_nvml_fix"),
    ],
)
def test_bad_input_fails_before_any_change(host, playbook, limit, extra, message):
    def state():
        return host.check_output(
            "md5sum /etc/docker/daemon.json /etc/apt/sources.list.d/*.sources; dpkg-query -W 'nvidia-container*'")

    before = state()
    run = playbook("converge.yml", *limit, "-e", json.dumps(extra))
    assert run.returncode != 0
    assert message in run.stdout, run
    assert run.unchanged, run
    assert state() == before


def test_the_mirror_offers_what_a_mismatched_pin_could_use(playbook, limit):
    run = playbook("converge.yml", *limit, "-e", '{"nvidia_container_toolkit_version": "1.18.1-1"}')
    assert "offers all four at: 1.17.8-1, 1.18.0-1" in run.stdout, run
