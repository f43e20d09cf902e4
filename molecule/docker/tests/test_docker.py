"""What a sysadmin sees on a node after gpufleet.node.docker ran (distro path, lab node)."""

import json

import pytest

ENGINE_PACKAGES = ["docker.io", "containerd", "runc"]   # and docker-cli on Debian 13 (test below)


def daemon_json(host):
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


def docker_info(host):
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


def inspect(host, name):
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


@pytest.mark.parametrize("package", ENGINE_PACKAGES)
def test_engine_package_installed_and_held(host, package):
    assert host.package(package).is_installed
    selection = host.check_output(f"dpkg --get-selections {package}").split()
    assert selection == [package, "hold"]


def test_debian_13_gets_the_cli_it_only_recommends(host):
    if host.system_info.codename != "trixie":
        pytest.skip("Debian 12's docker.io carries its CLI")
    assert host.package("docker-cli").is_installed
    assert host.check_output("dpkg --get-selections docker-cli").split() == ["docker-cli", "hold"]
    assert host.check_output("docker version --format '{{.Client.Version}}'").startswith("26.1.")


def test_dockerd_enabled_and_running(host):
    service = host.service("docker")
    assert service.is_enabled
    assert service.is_running


def test_keys_written_before_the_role_survive(host):
    settings = daemon_json(host)
    assert settings["max-concurrent-downloads"] == 4
    assert settings["log-opts"]["labels"] == "team"


def test_dockerd_runs_with_the_production_defaults(host, lab_registry):
    info = docker_info(host)
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    assert info["CgroupDriver"] == "systemd"
    # nested storage on the node's own volume, not the vfs fallback
    assert info["Driver"] == "overlay2"
    assert any(lab_registry in cidr_or_name for cidr_or_name in json.dumps(info["RegistryConfig"]).split('"'))
    settings = daemon_json(host)
    assert settings["log-opts"]["max-size"] == "100m"
    assert settings["log-opts"]["max-file"] == "5"


def test_dockerd_gets_the_proxy_through_a_drop_in(host):
    environment = host.check_output("systemctl show docker --property=Environment --value")
    assert "HTTP_PROXY=http://127.0.0.1:3128" in environment
    assert "NO_PROXY=localhost,127.0.0.1," in environment
    assert host.file("/etc/systemd/system/docker.service.d/http-proxy.conf").mode == 0o644


def test_listed_admin_can_use_docker(host):
    assert "docker" in host.user("labadmin").groups
    result = host.run("runuser -u labadmin -- docker version --format '{{.Server.Version}}'")
    assert result.rc == 0, result.stderr


def test_pulls_from_the_site_registry_bypass_the_proxy_and_run(host, busybox_image):
    host.check_output(f"docker pull {busybox_image}")
    assert host.check_output(f"docker run --rm {busybox_image} echo hello-from-node") == "hello-from-node"


def test_running_container_survives_the_role_restarting_dockerd(host, playbook, limit, busybox_image):
    host.run("docker rm -f gpufleet-live-restore-probe")
    container_id = host.check_output(f"docker run -d --name gpufleet-live-restore-probe {busybox_image} sleep 3600")
    started_at = inspect(host, container_id)["State"]["StartedAt"]
    dockerd_pid = host.check_output("systemctl show docker --property=MainPID --value")
    try:
        run = playbook("converge.yml", *limit, "-e", '{"docker_log_opts": {"max-size": "50m", "max-file": "3"}}')
        assert run.returncode == 0, run
        assert "RUNNING HANDLER [gpufleet.node.docker : Restart docker]" in run.stdout, run
        assert host.check_output("systemctl show docker --property=MainPID --value") != dockerd_pid
        state = inspect(host, "gpufleet-live-restore-probe")
        assert state["Id"] == container_id
        assert state["State"]["Running"] is True
        assert state["State"]["StartedAt"] == started_at
        assert daemon_json(host)["log-opts"]["max-size"] == "50m"
    finally:
        host.run("docker rm -f gpufleet-live-restore-probe")
        restored = playbook("converge.yml", *limit)
        assert restored.returncode == 0, restored


def test_check_mode_on_the_converged_node_reports_no_change(playbook, limit):
    run = playbook("converge.yml", *limit, "--check", "--diff")
    assert run.clean, run


def test_wrong_type_is_rejected_before_any_change(host, playbook, limit):
    before = host.file("/etc/docker/daemon.json").sha256sum
    run = playbook("converge.yml", *limit, "-e", '{"docker_daemon_options": "text"}')
    assert run.returncode != 0
    assert "docker_daemon_options" in run.stdout, run
    assert "dict" in run.stdout, run
    assert run.unchanged, run
    assert host.file("/etc/docker/daemon.json").sha256sum == before


def test_broken_daemon_json_is_refused_not_overwritten(host, playbook, limit):
    original = host.file("/etc/docker/daemon.json").content_string
    host.check_output("cp -p /etc/docker/daemon.json /root/daemon.json.keep")
    host.check_output("printf '{broken' > /etc/docker/daemon.json")
    try:
        run = playbook("converge.yml", *limit)
        assert run.returncode != 0
        assert "not valid JSON" in run.stdout, run
        assert host.file("/etc/docker/daemon.json").content_string == "{broken"
        assert run.unchanged, run
    finally:
        host.check_output("cp -p /root/daemon.json.keep /etc/docker/daemon.json")
    assert host.file("/etc/docker/daemon.json").content_string == original


def test_switching_install_method_is_refused_unless_allowed(host, playbook, limit):
    run = playbook("converge.yml", *limit, "-e", "docker_install_method=docker_repo")
    assert run.returncode != 0
    engine = "docker-cli, docker.io" if host.system_info.codename == "trixie" else "docker.io"
    assert f"docker_install_method=docker_repo would remove containerd, {engine}, runc" in run.stdout, run
    assert "docker_allow_method_switch" in run.stdout, run
    assert host.package("docker.io").is_installed


def test_docker_repo_path_in_check_mode(host, playbook, limit, lab_www):
    # Docker's repository is unreachable from the lab: the URLs point at the lab web
    # server, a STAND-IN that serves only the lab's signing key. In --check the role
    # fetches nothing but the key's headers and changes nothing on the node.
    extra = {
        "docker_install_method": "docker_repo",
        "docker_allow_method_switch": True,
        "docker_repo_url": f"{lab_www}/docker-ce-standin",
        "docker_repo_gpg_key_url": f"{lab_www}/lab-archive-key.asc",
    }
    run = playbook("converge.yml", *limit, "--check", "--diff", "-e", json.dumps(extra))
    assert run.returncode == 0, run
    assert "changed: [" in run.task("gpufleet.node.docker : Add Docker's repository"), run
    assert "docker-ce-standin/debian" in run.stdout, run
    assert not host.file("/etc/apt/sources.list.d/docker.sources").exists
    assert not host.file("/etc/apt/keyrings/docker.asc").exists
    assert host.package("docker.io").is_installed
    assert not host.package("docker-ce").is_installed
