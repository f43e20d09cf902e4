"""The inventory checks: every documented default passes, each bad value is named with what is
expected, a secret's value never reaches a message, and conflicts across roles are refused."""

import base64
from pathlib import Path

import pytest
import yaml
from ansible_collections.gpufleet.node.plugins.module_utils import _inputs

ROOT = Path(__file__).resolve().parents[4]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPvlh7nP2F3pTt8YJ3O0w4b6ZPm3b7b3u2n8b4Kx3yA alice@laptop"
DIGEST = "sha256:" + "a" * 64
TOKEN = "0123456789abcdef0123456789abcdef0123456789abcdef"


def defaults():
    """Every role's defaults, with the values the inventory must give (or that are templates)."""
    values = {}
    for role in _inputs.ROLES:
        values.update(yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()))
    values.update({
        "jupyter_container_image": f"docker.io/pytorch/pytorch@{DIGEST}",
        "ssh_container_image": f"docker.io/pytorch/pytorch@{DIGEST}",
        "gpu_verify_image": f"docker.io/pytorch/pytorch@{DIGEST}",
        "gpu_verify_report_dir": "/home/admin/fleet/fleet-report",
        "pytorch_image_digest": DIGEST,
        "pytorch_image_build_repository": "docker.io/pytorch/pytorch-workbench",
        "node_drain_name": "gpu-node-01",
        "jupyter_container_token": TOKEN,
        "ssh_container_users": [{"name": "alice", "uid": 2001, "authorized_keys": [KEY]}],
        "__groups_all": ["gpu-node-01", "slurm-head"],
        "__ansible_port": 22,
    })
    return values


def check(**changes):
    values = defaults()
    values.update(changes)
    return _inputs.problems(values)


def test_the_documented_defaults_pass():
    assert _inputs.problems(defaults()) == []


@pytest.mark.parametrize(("name", "value", "expected"), [
    # package versions in the distribution's syntax, never shell text
    ("nvidia_driver_version", "580.95.05-1; rm -rf /", "a package version"),
    ("nvidia_driver_version", "570.86.15-1", "not of branch 580"),
    ("nvidia_driver_branch", "five-eighty", "three digits"),
    ("nvidia_container_toolkit_version", "latest", "never latest"),
    ("docker_ce_version", "28.5", "exact version"),
    ("docker_distro_version", "20.10 && curl x", "package version"),
    ("docker_distro_packages", ["docker.io", "bad name"], "docker_distro_packages[1] must be a package name"),
    # URLs with a scheme
    ("docker_registry_mirrors", ["mirror.example.internal"], "docker_registry_mirrors[0] must be a URL"),
    ("docker_http_proxy", "proxy.example.internal:3128", "docker_http_proxy must be a URL"),
    ("docker_https_proxy", "http://", "naming a host"),
    ("nvidia_driver_cuda_repo_url", "ftp://mirror/cuda", "http:// or https:// or file://"),
    ("pytorch_image_build_pip_index_url", "pypi.example.internal/simple", "URL"),
    ("docker_no_proxy", "localhost, .example.internal, bad host", "comma-separated list"),
    # absolute paths without ..
    ("docker_data_root", "srv/docker", "absolute path"),
    ("docker_data_root", "/srv/../etc", "without . or .."),
    ("docker_data_root", "/", "not / itself"),
    ("jupyter_container_config_dir", "/etc/gpufleet/jupyter\n", "control characters"),
    ("nvidia_container_toolkit_cdi_spec", "/opt/nvidia.yaml", "/etc/cdi or /var/run/cdi"),
    ("gpu_verify_report_dir", "fleet-report", "absolute path"),
    ("jupyter_container_volumes", [{"host": "/srv/a:/etc", "container": "/workspace"}], "without : or ,"),
    ("ssh_container_volumes", [{"host": "/srv/gpufleet/workspace", "container": "/data"}],
     "mount exactly one folder at ssh_container_home"),
    # sizes and CPU counts
    ("jupyter_container_memory", "lots", "a size"),
    ("ssh_container_shm_size", "", "a size"),
    ("ssh_container_cpus", "-1", "number of CPUs"),
    ("jupyter_container_cpus", "0", "number of CPUs"),
    ("docker_log_opts", {"max-size": "big", "max-file": "5"}, "docker_log_opts['max-size'] must be a size"),
    ("docker_log_opts", {"max-size": "100m", "max-file": 0}, "number of files"),
    # ports, uids and gids
    ("jupyter_container_port", 70000, "a port from 1 to 65535"),
    ("ssh_container_port", "ssh", "a port from 1 to 65535"),
    ("jupyter_container_uid", 0, "never runs as root"),
    ("jupyter_container_gid", -1, "above 0"),
    ("ssh_container_gid", 0, "above 0"),
    ("ssh_container_users", [{"name": "alice", "uid": 0, "authorized_keys": [KEY]}], "root is never a login"),
    ("ssh_container_users", [{"name": "root", "uid": 5, "authorized_keys": [KEY]}], "other than root"),
    ("ssh_container_users", [{"name": "Alice Smith", "uid": 5, "authorized_keys": [KEY]}], "Linux user name"),
    ("ssh_container_users", [{"name": "a", "uid": 5, "authorized_keys": []}], "could never log in"),
    ("ssh_container_users", [{"name": "a", "uid": 5, "authorized_keys": ["not a key"]}], "OpenSSH public key"),
    ("ssh_container_users", [{"name": "a", "uid": 5, "authorized_keys": [KEY], "shell": "/bin/sh"}],
     "name, uid, gid and authorized_keys only"),
    ("ssh_container_users", [{"name": "a", "uid": 5, "authorized_keys": [KEY]},
                             {"name": "b", "uid": 5, "authorized_keys": [KEY]}], "their own uid"),
    ("ssh_container_users", [], "ssh_container_users is empty"),
    # names
    ("docker_users", ["bad user"], "docker_users[0] must be a Linux user name"),
    ("ssh_container_group", "Work Bench", "Linux group name"),
    ("jupyter_container_name", "jupyter;reboot", "container and unit name"),
    ("gpu_verify_services", ["gpufleet jupyter"], "systemd unit name"),
    ("jupyter_container_listen", "everywhere", "an IP address"),
    ("docker_insecure_registries", ["registry:port"], "host[:port]"),
    ("pytorch_image_repository", "docker.io/pytorch/pytorch:2.9", "without tag or digest"),
    ("pytorch_image_tag", "2.9 latest", "an image tag"),
    ("nvidia_container_toolkit_test_image", "Busy Box", "image reference"),
    # timeouts and counts
    ("node_drain_timeout", 0, "above 0"),
    ("gpu_verify_timeout", "soon", "above 0"),
    ("nvidia_driver_reboot_timeout", 5, "at least 60"),
    ("jupyter_container_token_min_length", 4, "at least 16"),
    ("gpufleet_serial", "0", "a number of nodes"),
    ("gpufleet_serial", [1, "150%"], "a number of nodes"),
    ("gpufleet_max_fail_percentage", 101, "from 0 to 100"),
    ("gpufleet_upgrade_serial", 0, "upgraded at a time"),
    ("gpufleet_upgrade_toolkit", "yes please", "true or false"),
    # GPU selections and ulimits
    ("jupyter_container_gpus", "some", "all, none, a count"),
    ("gpu_verify_gpus", [0, 0], "all, none, a count"),
    ("ssh_container_ulimits", {"memlock": "lots"}, "-1 (unlimited) or a number"),
    # the drain settings upgrade_driver.yml uses
    ("node_drain_reason", "upgrade\nExecStart=/bin/sh", "control characters"),
    ("node_drain_delegate", "slurm-hed", "a host of the inventory"),
    ("node_drain_command", ["scontrol", ""], "node_drain_command[1] must be set"),
    # the lock's own fields
    ("gpu_verify_lock", {"image_digest": "sha256:12"}, "gpu_verify_lock.image_digest must be sha256:"),
    ("gpu_verify_lock", {"min_gpus": "eight"}, "gpu_verify_lock.min_gpus must be a mapping of inventory group"),
    ("gpu_verify_lock", {"min_gpus": 8}, "gpu_verify_lock.min_gpus must be a mapping of inventory group"),
    ("gpu_verify_lock", {"min_gpus": {"hgx": "eight"}}, "gpu_verify_lock.min_gpus['hgx'] must be a number of GPUs"),
    ("gpu_verify_lock", {"min_performance": 90}, "a fraction above 0"),
    ("gpu_verify_lock", {"reference": {"H100": {"bf16_tflops": "fast"}}}, "gpu_verify_lock.reference['H100']"),
    ("gpu_verify_lock", {"image_digst": DIGEST}, "unknown key 'image_digst'"),
    ("gpu_verify_lock", ["not", "a", "mapping"], "gpu_verify_lock must be a mapping"),
    # the pin
    ("pytorch_image_digest", "latest", "sha256: followed by 64 hex digits"),
    ("jupyter_container_base_url", "jupyter", "starts and ends with /"),
])
def test_a_bad_value_is_named_with_what_is_expected(name, value, expected):
    found = check(**{name: value})
    assert any(p.startswith(name.split("[")[0]) or name in p for p in found), found
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(("changes", "expected"), [
    ({"ssh_container_port": 8888}, "jupyter_container_port and ssh_container_port are both 8888"),
    ({"ssh_container_port": 22}, "the port of the node's own sshd"),
    ({"ssh_container_port": 22, "__ansible_port": None}, "the port of the node's own sshd"),
    ({"ssh_container_port": 2200, "__ansible_port": 2200}, "the port of the node's own sshd"),
    ({"docker_daemon_options": {"live-restore": False}}, "which docker_live_restore sets"),
    ({"docker_daemon_options": {"data-root": "/srv/docker"}}, "which docker_data_root sets"),
    ({"docker_daemon_options": {"hosts": ["tcp://0.0.0.0:2375"]}}, "dockerd then refuses to start"),
    ({"docker_daemon_fragments": {"site": {"default-runtime": "runc"}}}, "nvidia_container_toolkit_default_runtime"),
    ({"jupyter_container_listen": "0.0.0.0"}, "only with TLS"),
    ({"jupyter_container_tls_cert": "/etc/ssl/node.pem"}, "set both"),
    ({"pytorch_image_source": "archive", "pytorch_image_id": DIGEST}, "set exactly one of"),
    ({"node_drain_method": "command"}, "node_drain_method command needs node_drain_command"),
    ({"pytorch_image_registry_password": "hunter2hunter2"}, "without pytorch_image_registry_username"),
])
def test_values_that_conflict_are_refused(changes, expected):
    found = check(**changes)
    assert any(expected in p for p in found), found


def test_two_services_may_share_a_port_when_one_is_off():
    assert check(ssh_container_port=8888, ssh_container_enabled=False) == []


def test_a_switched_off_service_is_not_checked_beyond_the_switch():
    assert check(ssh_container_enabled=False, ssh_container_users=[]) == []


@pytest.mark.parametrize("token", ["short", "has white space inside it, thirty-two chars", "x" * 31])
def test_a_secret_is_shown_by_length_only(token):
    found = check(jupyter_container_token=token, pytorch_image_registry_username="robot",
                  pytorch_image_registry_password="pass\nword")
    assert any("jupyter_container_token" in p for p in found), found
    assert any("pytorch_image_registry_password" in p for p in found), found
    text = "\n".join(found)
    assert token not in text and "pass\nword" not in text and "pass\\nword" not in text
    assert "hidden" in text or "whitespace" in text


def test_an_empty_token_says_where_it_comes_from():
    found = check(jupyter_container_token="")
    assert any("jupyter_container_token is empty: set it from Ansible Vault" in p for p in found), found


@pytest.mark.parametrize(("name", "value"), [
    ("docker_registry_mirrors", ["https://mirror.example.internal", "http://10.0.0.5:5000"]),
    ("docker_insecure_registries", ["registry.example.internal:5000", "10.0.0.0/8", "[fd00::1]:5000"]),
    ("docker_no_proxy", "localhost,127.0.0.1, .example.internal,10.0.0.0/8"),
    ("docker_http_proxy", "http://proxy.example.internal:3128"),
    ("nvidia_driver_version", "580.95.05-0ubuntu0.24.04.2"),
    ("nvidia_driver_version", "3:580.95.05-1.el9"),
    ("docker_distro_version", "20.10.24+dfsg1-1+deb12u1"),
    ("jupyter_container_gpus", [0, "GPU-6a0e3b9c-1d2e-4f5a-8b7c-9d0e1f2a3b4c"]),
    ("gpu_verify_lock", {"min_gpus": {"hgx": 8, "pcie": 4}, "min_performance": 0.9,
                         "reference": {"NVIDIA H100 80GB HBM3": {"bf16_tflops": 798, "fp16_tflops": 790,
                                                                 "copy_tbps": 3.0}}}),
    ("ssh_container_gpus", 2),
    ("jupyter_container_memory", "64g"),
    ("ssh_container_cpus", "0.5"),
    ("ssh_container_listen", "::"),
    ("gpufleet_serial", [1, "25%", "100%"]),
    ("node_drain_delegate", "slurm-head"),
    ("docker_data_root", "/srv/docker"),
    ("nvidia_container_toolkit_test_image", "registry.example.internal:5000/lab/busybox:1"),
])
def test_good_values_pass(name, value):
    assert check(**{name: value}) == []


def test_the_report_names_each_problem_once_with_its_hosts():
    report = _inputs.problems_report({"a": ["x must be y", "z"], "b": ["x must be y"], "c": []}, ["a", "b", "c"])
    assert report.count("x must be y") == 1
    assert "- x must be y (a, b)" in report and "- z (a)" in report
    assert _inputs.problems_report({"a": ["p"], "b": ["p"]}, ["a", "b"]).endswith("- p (every host)")
    assert _inputs.problems_report({"a": [], "b": []}, ["a", "b"]) == ""


def test_the_lock_run_may_find_the_pin_missing_still():
    values = {**defaults(), "pytorch_image_digest": ""}
    assert any("pytorch_image_digest must be sha256:" in p for p in _inputs.problems(values))
    assert _inputs.problems(values, writing_lock=True) == []


def test_a_lock_field_left_empty_says_nothing():
    """The lab's lock templates its fields from the pins; a pin left empty leaves the field empty."""
    assert check(gpu_verify_lock={"driver_version": "", "image_id": "", "torch": "2.9.1+cu128"}) == []


def _key_line(kind, *fields):
    """An OpenSSH public key line built field by field (RFC 4253 section 6.6)."""
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in (kind.encode(), *fields))
    return f"{kind} {base64.b64encode(blob).decode()} someone@laptop"


def _rsa(bits):
    modulus = (1 << (bits - 1)) | 1
    return _key_line("ssh-rsa", (65537).to_bytes(3, "big"), b"\0" + modulus.to_bytes(bits // 8, "big"))


@pytest.mark.parametrize(("line", "named"), [
    (_rsa(2048), "at least 3072 bits (this one has 2048"),
    (_rsa(1024), "this one has 1024"),
    (_key_line("ssh-dss", b"p", b"q", b"g", b"y"), "DSA keys are refused"),
    ("ssh-rsa " + KEY.split()[1] + " x", "the ssh-rsa key its line names"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA x", "valid base64 of a key"),
])
def test_weak_or_mislabelled_ssh_keys_are_refused_naming_the_key(line, named):
    problems = check(ssh_container_users=[{"name": "alice", "uid": 2001, "authorized_keys": [KEY, line]}])
    assert any("ssh_container_users[0].authorized_keys[1]" in p and named in p for p in problems), problems


@pytest.mark.parametrize("line", [KEY, _rsa(3072), _rsa(4096),
                                  _key_line("ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x01" * 64)])
def test_strong_ssh_keys_pass(line):
    assert _inputs.ssh_key_weakness(line) == ""
    assert check(ssh_container_users=[{"name": "alice", "uid": 2001, "authorized_keys": [line]}]) == []
