"""The GPU hand-over executed by each supported OS's real Docker engine, on a STAND-IN GPU.

STAND-IN: the nodes' GPU is the lab's (lab/standin/gpu/gpufleet-standin-gpu: NVIDIA PCI ids,
/proc/driver/nvidia, /dev/nvidia0 and /dev/nvidiactl, a stand-in nvidia-smi), handed over by the
lab's STAND-IN container toolkit (lab/standin/files/: a runc shim, nvidia-ctk cdi generate).
Nothing can compute on it: torch in the image sees no CUDA. What is real: gpu_host_facts reading
the node, the toolkit role choosing and configuring the hand-over, the services' and the probe's
docker run lines, and Docker 20.10 (gpu1, Debian 12: --runtime nvidia --gpus) and Docker 26
(gpu2, Debian 13: CDI device names) executing them.

`docker exec` fails on the Debian 13 lab nodes (runc cannot join the container's cgroup; the lab
host runs cgroup v1, a real Debian 13 node cgroup v2), so the tests look into a container by
entering its namespaces (nsenter) and log in over SSH as a user would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("gpufleet-jupyter", "gpufleet-ssh")
SKIP_DRIVER = ("--skip-tags", "driver")
LAB_KEY = Path(os.environ.get("GPUFLEET_LAB_STATE", "/var/lib/gpufleet-lab")) / "ssh/researcher_ed25519"


@pytest.fixture
def debian13(host):
    return host.system_info.release.startswith("13")


@pytest.fixture
def uuid(host):
    """The stand-in GPU's UUID as the node's driver lists it."""
    info = host.run("cat /proc/driver/nvidia/gpus/*/information")
    assert info.rc == 0, info
    return re.search(r"GPU UUID:\s*(\S+)", info.stdout).group(1)


def docker_inspect(host, container):
    out = host.run(f"docker inspect {container}")
    assert out.rc == 0, out
    return json.loads(out.stdout)[0]


def in_container(host, container, command):
    """Run a command in a running container's namespaces, as docker exec would (waiting for the
    container to run: a unit restarted by a converge may still be starting it)."""
    for _attempt in range(60):
        state = host.run(f"docker inspect -f '{{{{.State.Running}}}} {{{{.State.Pid}}}}' {container}").stdout.split()
        if state and state[0] == "true":
            break
        time.sleep(1)
    pid = docker_inspect(host, container)["State"]["Pid"]
    return host.run(f"nsenter --target {pid} --mount --uts --ipc --net --pid -- {command}")


def ssh(host, command):
    """The OpenSSH client from the lab host, logged in with the lab user's key."""
    ip = subprocess.check_output(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                  host.backend.get_hostname()], text=True).strip()
    return subprocess.run(
        ["ssh", "-p", "2222", "-i", str(LAB_KEY), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
         f"researcher@{ip}", command], capture_output=True, text=True, timeout=120, check=False)


def report(tmp_path, name):
    rows = json.loads((tmp_path / "fleet-report.json").read_text())["hosts"]
    return {f["check"]: f for f in next(row for row in rows if row["host"] == name)["findings"]}


def test_the_node_is_read_as_a_gpu_host_with_a_loaded_driver(host):
    facts = host.ansible("gpufleet.node.gpu_host_facts", check=False)["ansible_facts"]["gpu_host"]
    assert facts["gpu_count"] == 1 and facts["gpus"][0]["name"] == "H200 SXM 141GB", facts
    assert facts["nvidia_module"]["loaded"] and facts["nvidia_module"]["flavour"] == "open", facts
    wanted = host.ansible.get_variables()["nvidia_driver_version"].rsplit("-", 1)[0]
    assert facts["nvidia_module"]["version"] == wanted, facts


def test_the_toolkit_picked_the_hand_over_the_engine_can_do(host, debian13):
    spec = host.file("/etc/cdi/nvidia.yaml")
    if debian13:   # Docker 26: CDI, the specification written for the loaded driver
        assert spec.exists and "kind: nvidia.com/gpu" in spec.content_string
        assert json.loads(host.file("/etc/docker/daemon.json").content_string)["features"]["cdi"] is True
    else:          # Docker 20.10: the runtime hook, with the /dev/char links runc finds devices by
        assert not spec.exists
        assert host.file("/dev/char/195:0").linked_to == "/dev/nvidia0"


@pytest.mark.parametrize("service", SERVICES)
def test_the_engine_gave_each_service_the_gpu(host, debian13, uuid, service):
    config = docker_inspect(host, service)["HostConfig"]
    if debian13:
        assert config["DeviceRequests"] == [
            {"Driver": "cdi", "Count": 0, "DeviceIDs": ["nvidia.com/gpu=all"], "Capabilities": None, "Options": None}]
    else:
        assert config["Runtime"] == "nvidia", config
        assert config["DeviceRequests"][0]["Count"] == -1 and config["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    node = in_container(host, service, "stat -c '%F %t:%T' /dev/nvidia0 /dev/nvidiactl")
    assert node.rc == 0 and node.stdout.split("\n")[:2] == ["character special file c3:0",
                                                            "character special file c3:ff"], node
    smi = in_container(host, service, "nvidia-smi -L")
    assert smi.rc == 0 and smi.stdout.strip() == f"GPU 0: NVIDIA H200 (UUID: {uuid})", smi


def test_a_researcher_logged_in_over_ssh_sees_the_gpu(host, uuid):
    login = ssh(host, "ls /dev/nvidia0 && nvidia-smi -L")
    assert login.returncode == 0, login
    assert login.stdout.split("\n")[:2] == ["/dev/nvidia0", f"GPU 0: NVIDIA H200 (UUID: {uuid})"], login


def test_a_container_without_the_gpus_gets_no_device(host, debian13):
    """The hand-over is the only way in: the same image without the GPU arguments sees nothing."""
    image = docker_inspect(host, "gpufleet-jupyter")["Image"]
    bare = host.run(f"docker run --rm --pull never --network none {image} sh -c 'ls /dev/nvidia*; nvidia-smi -L'")
    assert bare.rc != 0 and "/dev/nvidia0" not in bare.stdout, bare


def test_a_container_given_no_gpu_says_so_to_the_nvidia_runtime(host):
    """The image asks for every GPU (NVIDIA_VISIBLE_DEVICES=all, as the official pytorch/pytorch
    images do), and the nvidia runtime alone (a default-runtime nvidia, no --gpus) honours it;
    what the services and the probe add when they get no GPU (NVIDIA_VISIBLE_DEVICES=void,
    tests/unit: gpu_args) keeps the GPUs out."""
    image = docker_inspect(host, "gpufleet-ssh")["Image"]
    run = "docker run --rm --pull never --network none --runtime nvidia"
    grabbed = host.run(f"{run} {image} ls /dev/nvidia0")
    assert grabbed.rc == 0, grabbed
    kept_out = host.run(f"{run} --env NVIDIA_VISIBLE_DEVICES=void {image} sh -c 'ls /dev/nvidia*'")
    assert kept_out.rc != 0 and "/dev/nvidia0" not in kept_out.stdout, kept_out


def test_verify_probes_with_the_gpu_and_checks_the_hand_over(playbook, host, debian13, tmp_path):
    run = playbook(str(REPO / "playbooks" / "verify.yml"), "--limit", host.backend.get_hostname(),
                   "-e", json.dumps({"gpu_verify_report_dir": str(tmp_path)}))
    assert run.returncode == 0 and run.unchanged, run
    checks = report(tmp_path, host.backend.get_hostname())
    assert checks["gpu hand-over (probe container)"]["measured"] == "1 (/dev/nvidia0)", checks
    handover = "gpu hand-over (CDI specification)" if debian13 else "gpu hand-over (nvidia runtime)"
    assert checks[handover]["passed"], checks
    wanted = host.ansible.get_variables()["nvidia_driver_version"].rsplit("-", 1)[0]
    assert checks["driver"]["measured"] == wanted and checks["driver"]["passed"], checks
    assert all(f["passed"] for f in checks.values()), checks


def test_a_broken_hand_over_stops_the_services_and_verify_names_it(playbook, host, debian13, tmp_path):
    """Unkind as a real node: the CDI spec deleted (gpu2), or the nvidia runtime gone from
    dockerd (gpu1), and a service's next start fails in the engine; verify names the check in
    the fleet report and fails the node; a converge repairs it."""
    name = host.backend.get_hostname()
    image = docker_inspect(host, "gpufleet-ssh")["Image"]
    since = int(time.time())
    if debian13:
        assert host.run("rm /etc/cdi/nvidia.yaml").rc == 0
        check, refusal = "gpu hand-over (CDI specification)", "unresolvable CDI devices nvidia.com/gpu=all"
    else:
        drop = ("python3 -c \"import json; p='/etc/docker/daemon.json'; d=json.load(open(p)); "
                "d.pop('runtimes'); json.dump(d, open(p, 'w'))\" && systemctl restart docker")
        assert host.run(drop).rc == 0
        check, refusal = "gpu hand-over (nvidia runtime)", "Unknown runtime specified nvidia"
        # The running container outlives that dockerd restart (live-restore) and the unit follows
        # it again; only the deliberate restart below makes the engine start a new one.
        for _attempt in range(30):
            if "following it again" in host.run(f"journalctl -u gpufleet-ssh --since @{since} --no-pager").stdout:
                break
            time.sleep(1)
    try:
        host.run("systemctl restart gpufleet-ssh")
        journal = ""
        for _attempt in range(30):
            journal = host.run(f"journalctl -u gpufleet-ssh --since @{since} --no-pager").stdout
            if refusal in journal:
                break
            time.sleep(1)
        assert refusal in journal, journal
        gpu = "--device nvidia.com/gpu=all" if debian13 else "--runtime nvidia --gpus all"
        start = host.run(f"docker run --rm --pull never --network none {gpu} {image} true")
        assert start.rc != 0 and refusal in start.stderr, start
        run = playbook(str(REPO / "playbooks" / "verify.yml"), "--limit", name,
                       "-e", json.dumps({"gpu_verify_report_dir": str(tmp_path)}))
        assert run.returncode != 0, run
        checks = report(tmp_path, name)
        assert not checks[check]["passed"], checks
        # the probe's own container was refused too: the report says so, with the engine's words
        assert refusal in checks["probe"]["measured"], checks
    finally:
        repair = playbook("converge.yml", "--limit", name, *SKIP_DRIVER)
    assert repair.returncode == 0, repair
    for _attempt in range(30):   # sshd back in its container
        login = ssh(host, "nvidia-smi -L")
        if login.returncode == 0:
            break
        time.sleep(2)
    assert login.returncode == 0, login


def test_more_gpus_than_the_node_has_are_refused_before_any_change(playbook, host):
    unit = host.file("/etc/systemd/system/gpufleet-jupyter.service").content_string
    run = playbook("converge.yml", "--limit", host.backend.get_hostname(), *SKIP_DRIVER, "--tags", "services",
                   "-e", json.dumps({"jupyter_container_gpus": [1]}))
    assert run.returncode != 0 and "gpus lists GPU index 1; the host has 1 GPU(s)" in run.stdout, run
    assert host.file("/etc/systemd/system/gpufleet-jupyter.service").content_string == unit


def test_check_mode_on_the_converged_node_reports_no_change(playbook, host):
    run = playbook("converge.yml", "--limit", host.backend.get_hostname(), *SKIP_DRIVER, "--check")
    assert run.clean, run
