"""site.yml on two lab nodes: every stage that exists converges, bad input stops everything first."""

import json
import os


def test_every_node_runs_docker_with_live_restore(host):
    assert host.service("docker").is_running
    assert host.service("docker").is_enabled
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LiveRestoreEnabled"] is True


# The release archive's pin (inventories/lab/group_vars/gpu_nodes.yml).
PINNED_DRIVER = {"bookworm": "535.261.03-1"}


def test_every_node_has_the_pinned_driver_built_by_dkms(host):
    assert host.check_output("dpkg-query -W -f '${Version}' nvidia-driver") == PINNED_DRIVER[host.system_info.codename]
    assert ": installed" in host.check_output("dkms status")


def test_every_node_runs_containers_through_the_nvidia_runtime(host, busybox_image):
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes
    assert host.check_output(f"docker run --rm --runtime nvidia {busybox_image} echo ok") == "ok"


def test_each_node_gets_the_gpu_hand_over_its_engine_can_do(host):
    """nvidia_container_toolkit_nvml_fix: auto. Debian 12's Docker 20.10: the runtime hook and the
    /dev/char links' udev rule, no CDI (the toolkit scenario covers Debian 13's Docker 26: CDI)."""
    settings = json.loads(host.file("/etc/docker/daemon.json").content_string)
    rule = host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules")
    assert "cdi" not in settings.get("features", {})
    assert rule.exists and rule.contains("create-dev-char-symlinks")


def test_nodes_pull_from_the_lab_registry(host, busybox_image):
    assert host.check_output(f"docker run --rm {busybox_image} hostname -s") != ""


def test_bad_inventory_value_stops_the_run_before_any_host_changes(host, playbook):
    before = host.file("/etc/docker/daemon.json").sha256sum
    run = playbook("converge.yml", "-e", '{"docker_live_restore": "sometimes"}')
    assert run.returncode != 0
    assert "docker_live_restore" in run.stdout, run
    assert "PLAY [Converge the GPU nodes, batch by batch]" not in run.stdout, run
    assert run.unchanged, run
    assert len(run.recap) == 2, run
    assert host.file("/etc/docker/daemon.json").sha256sum == before


def test_missing_node_group_is_named(playbook, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    somewhere:\n      ansible_connection: local\n")
    run = playbook("converge.yml", inventory=str(inventory))
    assert run.returncode != 0
    assert "gpu_nodes" in run.stdout, run


def test_site_check_mode_on_converged_nodes_reports_no_change(playbook):
    run = playbook("converge.yml", "--check", "--diff")
    assert run.clean and len(run.recap) == 2, run


def image(host, ref):
    return json.loads(host.check_output(f"docker image inspect {ref}"))[0]


def test_every_node_serves_the_workbench_built_from_the_pinned_image(host):
    """The image and services stages with the default pytorch_image_source (`build`) on the lab's
    STAND-IN shaped like the official image (no JupyterLab, no sshd): the services run the workbench
    image built FROM the pin (its layers first), with sshd from the image's apt sources and
    JupyterLab from the site's pip index. One node built it and pushed it; the other pulled it."""
    registry = os.environ.get("GPUFLEET_LAB_REGISTRY", "172.17.0.1:5000")
    pin = f"{registry}/lab/pytorch@{os.environ.get('GPUFLEET_LAB_RUNTIME_DIGEST', '')}"
    base = image(host, pin)
    assert host.run(f"docker run --rm --network none {pin} sh -c 'command -v sshd || command -v jupyter'").rc != 0
    for unit in ("gpufleet-jupyter", "gpufleet-ssh"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
        running = image(host, host.check_output(f"docker inspect -f '{{{{.Image}}}}' {unit}"))
        assert running["Config"]["Labels"]["org.gpufleet.base"] == pin
        layers = base["RootFS"]["Layers"]
        assert running["RootFS"]["Layers"][:len(layers)] == layers
        assert any(d.startswith(f"{registry}/lab/pytorch-site-workbench@") for d in running["RepoDigests"])
    workbench = host.check_output("docker inspect -f '{{.Image}}' gpufleet-jupyter")
    assert host.check_output(f"docker run --rm --network none {workbench} jupyter lab --version") == "4.6.6"
    status = host.run("python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:8888/api/status')\"")
    assert "HTTP Error 403" in status.stderr
    probe = "import socket; print(socket.create_connection(('127.0.0.1', 2222)).recv(64))"
    banner = host.check_output(f'python3 -c "{probe}"')
    assert "OpenSSH" in banner


def test_a_services_run_alone_keeps_the_workbench_built_from_the_pin(playbook):
    """`--tags services` names the image from the variables alone: the built workbench image
    (its tag carries the build inputs' hash), not the base, so nothing changes on converged nodes."""
    run = playbook("converge.yml", "--tags", "services")
    assert run.clean and len(run.recap) == 2, run
