"""Bad input through the real playbooks, as a new user meets it: a copy of inventories/example
with one bad value at a time. Each case must stop the first play with a message naming the
variable, before any other play starts; the nodes point at a closed loopback port, so a check
that let a value through would show as an unreachable node in a later play, never as a change.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
TOKEN = "5f0c0d5e9a1b4c3d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPvlh7nP2F3pTt8YJ3O0w4b6ZPm3b7b3u2n8b4Kx3yA alice@laptop"
RECAP = re.compile(r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)", re.MULTILINE)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """inventories/example as README's quick start makes it: Vault file written, one SSH user."""
    path = tmp_path_factory.mktemp("inventory") / "prod"
    shutil.copytree(ROOT / "inventories" / "example", path)
    (path / "group_vars" / "gpu_nodes" / "vault.yml").write_text(f'vault_jupyter_container_token: "{TOKEN}"\n')
    with (path / "group_vars" / "gpu_nodes" / "vars.yml").open("a") as handle:
        handle.write(f'ssh_container_users:\n  - {{name: alice, uid: 2001, authorized_keys: ["{KEY}"]}}\n')
    hosts = (path / "hosts.yml").read_text().replace("  vars:\n", "  vars:\n    ansible_host: 127.0.0.1\n"
                                                     "    ansible_port: 1\n    ansible_ssh_timeout: 2\n", 1)
    (path / "hosts.yml").write_text(hosts)
    return path


def run(inventory, *args, playbook="playbooks/site.yml"):
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), str(ROOT / playbook), *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    return proc.returncode, proc.stdout + proc.stderr


def assert_stopped_first(rc, out, *expected):
    assert rc != 0, out
    plays = re.findall(r"^PLAY \[(.*?)\]", out, re.MULTILINE)
    assert plays == ["Validate the inventory"], out
    assert set(RECAP.findall(out)) <= {"0"}, out
    for text in expected:
        assert text in out, out


def test_the_quick_start_inventory_passes_the_first_play(inventory):
    rc, out = run(inventory, "--tags", "preflight")
    assert "PLAY [Converge the GPU nodes, batch by batch]" in out, out
    assert "UNREACHABLE" in out and rc != 0, out   # the hosts are a closed port: proof the checks let it through


def test_a_host_outside_gpu_nodes_needs_none_of_their_settings(inventory, tmp_path):
    """A Slurm controller in the inventory (node_drain_delegate) carries no token, users or pins."""
    fresh = tmp_path / "prod"
    shutil.copytree(inventory, fresh)
    hosts = (fresh / "hosts.yml").read_text().replace("all:\n", "all:\n  hosts:\n    slurm-head.example.internal:\n", 1)
    (fresh / "hosts.yml").write_text(hosts)
    _rc, out = run(fresh, "--tags", "preflight", "-e", '{"node_drain_delegate": "slurm-head.example.internal"}')
    assert "PLAY [Converge the GPU nodes, batch by batch]" in out, out
    assert "problem(s) in the inventory" not in out, out


# One case per class of bad input; the unit tests of plugins/module_utils/_inputs.py hold the rest.
CASES = {
    "package version with shell": ({"nvidia_driver_version": "580.95.05-1; curl x | sh"},
                                   "nvidia_driver_version must be a package version"),
    "driver branch not a number": ({"nvidia_driver_branch": "latest"}, "nvidia_driver_branch must be a driver branch"),
    "toolkit version latest": ({"nvidia_container_toolkit_version": "latest"}, "never latest"),
    "relative data-root": ({"docker_data_root": "srv/docker"}, "docker_data_root must be an absolute path"),
    "mirror without scheme": ({"docker_registry_mirrors": ["mirror.example.internal"]},
                              "docker_registry_mirrors[0] must be a URL"),
    "proxy without scheme": ({"docker_http_proxy": "proxy.example.internal:3128"}, "docker_http_proxy must be a URL"),
    "memory limit a word": ({"jupyter_container_memory": "plenty"}, "jupyter_container_memory must be a size"),
    "jupyter as root": ({"jupyter_container_uid": 0}, "jupyter_container_uid must be a number above 0"),
    "two services on one port": ({"ssh_container_port": 8888}, "are both 8888"),
    "volume path with ..": ({"ssh_container_volumes": [{"host": "/srv/../etc", "container": "/workspace"}]},
                            "ssh_container_volumes[0].host must be an absolute path without . or .."),
    "daemon option duplicating a variable": ({"docker_daemon_options": {"live-restore": False}},
                                             "which docker_live_restore sets"),
    "docker user with a space": ({"docker_users": ["research team"]}, "docker_users[0] must be a Linux user name"),
    "newline in a unit value": ({"node_drain_reason": "upgrade\nExecStartPre=/bin/sh"},
                                "node_drain_reason must be one line"),
    "only upgrade_driver.yml uses it": ({"node_drain_timeout": "forever"}, "argument 'node_drain_timeout'"),
    "upgrade batch size": ({"gpufleet_upgrade_serial": 0}, "gpufleet_upgrade_serial must be a number"),
    "site batch size": ({"gpufleet_serial": "all"}, "gpufleet_serial must be a number of nodes"),
    "malformed lock": ({"gpu_verify_lock": {"image_digest": "sha256:123", "min_gpus": "eight"}},
                       "gpu_verify_lock.min_gpus must be a mapping of inventory group"),
    "ssh key that is not a key": ({"ssh_container_users": [{"name": "bob", "uid": 2002, "authorized_keys": ["hello"]}]},
                                  "ssh_container_users[0].authorized_keys[0] must be an OpenSSH public key"),
    "type the argument spec catches": ({"docker_live_restore": "sometimes"}, "docker_live_restore"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_value_stops_the_first_play_naming_the_variable(inventory, case):
    extra, expected = CASES[case]
    rc, out = run(inventory, "-e", json.dumps(extra))
    assert_stopped_first(rc, out, expected)
    assert out.count(expected) <= 3, out   # one message for the fleet, not one per host


def test_the_vault_file_not_written_yet_is_named_once(inventory, tmp_path):
    fresh = tmp_path / "prod"
    shutil.copytree(inventory, fresh)
    shutil.copy(ROOT / "inventories" / "example" / "group_vars" / "gpu_nodes" / "vault.yml",
                fresh / "group_vars" / "gpu_nodes" / "vault.yml")
    rc, out = run(fresh)
    assert_stopped_first(rc, out, "jupyter_container_token refers to vault_jupyter_container_token",
                         "group_vars/gpu_nodes/vault.yml", "step 3", "(every host)")
    assert "is undefined" not in out, out


def test_a_secret_never_reaches_the_message(inventory, tmp_path):
    """From the Vault file, as secrets come: -e would echo it at -vvvv (Ansible prints its arguments)."""
    fresh = tmp_path / "prod"
    shutil.copytree(inventory, fresh)
    (fresh / "group_vars" / "gpu_nodes" / "vault.yml").write_text('vault_jupyter_container_token: "tooshort secret"\n')
    rc, out = run(fresh, "-vvvv")
    assert_stopped_first(rc, out, "jupyter_container_token must be one word without whitespace")
    assert "tooshort secret" not in out and "tooshort" not in out


@pytest.mark.parametrize("playbook", ["playbooks/verify.yml", "playbooks/onboard.yml", "playbooks/upgrade_driver.yml",
                                      "playbooks/lock.yml"])
def test_every_playbook_validates_the_whole_inventory_first(inventory, playbook):
    rc, out = run(inventory, "-e", '{"node_drain_timeout": 0}', "--limit", "gpu-pcie-02.example.internal",
                  playbook=playbook)
    assert_stopped_first(rc, out, "node_drain_timeout must be a number of seconds above 0")


def test_a_misspelt_variable_gets_the_name_it_was_meant_to_be(inventory):
    rc, out = run(inventory, "-e", '{"node_drain_metod": "slurm"}', "--tags", "preflight")
    # ansible-core 2.17 wraps a warning at 80 columns whatever the terminal
    assert "node_drain_metod is not a variable of gpufleet.node.node_drain (did you mean node_drain_method?)" in \
        " ".join(out.split())
    rc, out = run(inventory, "-e", '{"node_drain_metod": "slurm", "validate_inventory_unknown_variables": "fail"}')
    assert_stopped_first(rc, out, "node_drain_metod is not a variable")
