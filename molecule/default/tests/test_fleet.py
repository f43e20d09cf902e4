"""Fleet operations on the two converged nodes, as a sysadmin runs them.

- site.yml in batches: a node that fails stops at its stage while the others finish; later
  batches stop once too many failed; the fleet report lists every node with why.
- onboard.yml: refused before any change without --limit, for the whole fleet, or with pins
  that differ from the lock; otherwise only the named node is touched.
- upgrade_driver.yml: a real toolkit upgrade (the lab's STAND-IN toolkit repository carries
  1.17.8-1 and 1.18.0-1; Debian's archive carries one driver version, so the driver part is a
  no-op here), rolled node by node with a drain hook (method `command`: a shell line on the
  controller standing in for scontrol/kubectl, which the lab does not have). The roll stops at
  the first node that fails verification.

Each test runs its playbooks once (on the first node's turn) and looks at both nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

NODES = ("gpufleet-mol-node1", "gpufleet-mol-node2")
PLAYBOOKS = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / "playbooks"
UNITS = ("gpufleet-jupyter", "gpufleet-ssh")
TOOLKIT = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
           "libnvidia-container1")


@pytest.fixture
def only_once(host):
    if host.backend.get_hostname() != NODES[0]:
        pytest.skip(f"runs its playbooks once, on {NODES[0]}'s turn, and checks both nodes")


def on(node, command):
    """A shell command on a node, as `docker exec` runs it."""
    return subprocess.run(["docker", "exec", node, "sh", "-c", command], capture_output=True, text=True,
                          timeout=300, check=False)


def toolkit_version(node):
    return on(node, "dpkg-query -W -f '${Version}' nvidia-container-toolkit").stdout.strip()


def active(node, unit):
    return on(node, f"systemctl is-active {unit}").stdout.strip() == "active"


def report(directory):
    return {row["host"]: row for row in json.loads((directory / "fleet-report.json").read_text())["hosts"]}


def play_section(run, title):
    """The output of one play (up to the next play or the recap)."""
    return run.stdout.split(f"PLAY [{title}]", 1)[-1].split("\nPLAY ", 1)[0]


@pytest.fixture
def bad_pin_on_first_node(tmp_path):
    """An inventory that gives the first node a toolkit version its repository does not have:
    a valid value (validation lets it through) that fails in the toolkit stage."""
    path = tmp_path / "bad-pin.yml"
    path.write_text(f"all:\n  hosts:\n    {NODES[0]}:\n      nvidia_container_toolkit_version: 1.99.0-1\n")
    return str(path)


def site_in_batches(playbook, inventory, report_dir, serial, max_fail):
    return playbook("converge.yml", "-i", inventory, "--tags", "toolkit,verify", "-e", json.dumps({
        "gpufleet_serial": serial, "gpufleet_max_fail_percentage": max_fail,
        "gpu_verify_report_dir": str(report_dir)}))


def test_a_failed_node_stops_the_next_batches_and_the_report_says_why(only_once, playbook, bad_pin_on_first_node,
                                                                      tmp_path):
    run = site_in_batches(playbook, bad_pin_on_first_node, tmp_path, serial=1, max_fail=0)
    assert run.returncode != 0, run
    rows = report(tmp_path)
    assert rows[NODES[0]]["unverified"].startswith("failed in the toolkit stage"), rows
    assert "1.99.0-1" in rows[NODES[0]]["unverified"], rows
    assert rows[NODES[1]]["unverified"].startswith("not reached: the run stopped after gpufleet-mol-node1 failed")
    # the second batch never started: no task of the converge play ran on the second node
    assert f"[{NODES[1]}]" not in play_section(run, "Converge the GPU nodes, batch by batch"), run
    assert run.recap[NODES[0]]["failed"] == 1 and run.recap[NODES[1]]["failed"] == 1, run
    assert f"{NODES[1]}: not reached" in run.stdout, run
    # the failed node keeps what it had: toolkit, runtime and the running services
    assert toolkit_version(NODES[0]) == "1.18.0-1"
    assert all(active(node, unit) for node in NODES for unit in UNITS)


def test_below_the_threshold_the_other_nodes_finish_every_stage(only_once, playbook, bad_pin_on_first_node, tmp_path):
    run = site_in_batches(playbook, bad_pin_on_first_node, tmp_path, serial=1, max_fail=50)
    assert run.returncode != 0, run
    rows = report(tmp_path)
    assert rows[NODES[0]]["unverified"].startswith("failed in the toolkit stage"), rows
    assert rows[NODES[1]]["passed"] and not rows[NODES[1]].get("unverified"), rows
    assert run.recap[NODES[1]]["failed"] == 0 and run.recap[NODES[1]]["changed"] == 0, run
    assert f"{NODES[0]}: failed in the toolkit stage" in run.stdout, run


# One run per stage tag (and combinations), each on the first node made to fail in that stage:
# a rescued node must still end the run failed (rc 2), naming the stage and why, whatever stages
# the run selects. The preflight case: an explicit cdi on Debian 12's Docker 20.10 (the OS check
# itself reads facts a lab node cannot fake).
BROKEN_DAEMON_JSON = "/etc/docker/daemon.json"


@pytest.mark.parametrize(("args", "stage", "extra", "message"), [
    (("--tags", "preflight"), "preflight", {"nvidia_container_toolkit_nvml_fix": "cdi"},
     "installs Docker 20.10.24"),
    (("--tags", "driver"), "driver", {"nvidia_driver_branch": "580", "nvidia_driver_version": ""},
     "carries driver branch 535 only"),
    (("--tags", "docker,toolkit"), "docker", {}, "daemon.json"),
    (("--tags", "toolkit"), "toolkit", {"nvidia_container_toolkit_version": "1.99.0-1"}, "1.99.0-1"),
    (("--skip-tags", "driver,image,services,verify"), "toolkit", {"nvidia_container_toolkit_version": "1.99.0-1"},
     "1.99.0-1"),
    (("--check", "--tags", "toolkit"), "toolkit", {"nvidia_container_toolkit_version": "1.99.0-1"}, "1.99.0-1"),
    (("--tags", "image,services"), "image", {"pytorch_image_digest": "sha256:" + "0" * 64}, "0" * 64),
    # the official-shaped pin run as it is (no JupyterLab, no sshd): refused before the unit changes
    (("--tags", "image,services"), "services", {"pytorch_image_source": "registry"}, "has no jupyter"),
    (("--tags", "verify"), "verify", {"gpu_verify_require_gpu": True}, "cuda"),
], ids=["preflight", "driver", "docker,toolkit", "toolkit", "skip-tags", "check-toolkit", "image,services", "services",
        "verify"])
def test_a_stage_run_that_fails_on_a_node_exits_non_zero(only_once, playbook, tmp_path, args, stage, extra, message):
    if stage == "services":
        unit_before = on(NODES[0], "cat /etc/systemd/system/gpufleet-jupyter.service").stdout
    if stage == "docker":   # a daemon.json that is not JSON; the running dockerd keeps its own copy
        assert on(NODES[0], f"cp -p {BROKEN_DAEMON_JSON} {BROKEN_DAEMON_JSON}.test && "
                            f"printf '{{not json' > {BROKEN_DAEMON_JSON}").returncode == 0
    try:
        run = playbook("converge.yml", "--limit", NODES[0], *args,
                       "-e", json.dumps({**extra, "gpu_verify_report_dir": str(tmp_path)}))
    finally:
        if stage == "docker":
            on(NODES[0], f"mv {BROKEN_DAEMON_JSON}.test {BROKEN_DAEMON_JSON}")
    assert run.returncode == 2, run
    assert run.recap[NODES[0]]["failed"] == 1, run
    said = f"{NODES[0]}: failed in the {stage} stage" if stage != "verify" else f"{NODES[0]}: "
    failures = [line for line in run.stdout.splitlines() if said in line and message.lower() in line.lower()]
    assert failures, run
    # the node keeps what it had: its services still run
    assert all(active(NODES[0], unit) for unit in UNITS)
    if stage == "services":
        assert "pytorch_image_source" in run.stdout, run          # says what to set
        assert on(NODES[0], "cat /etc/systemd/system/gpufleet-jupyter.service").stdout == unit_before


def test_cdi_on_debian_12_docker_is_refused_before_any_change(only_once, playbook, tmp_path):
    """Debian 12's docker.io is 20.10: the preflight stage refuses an explicit cdi, before any
    node changes, naming the variable and the engine; the report says why for each node."""
    run = playbook("converge.yml", "-e", json.dumps({"nvidia_container_toolkit_nvml_fix": "cdi",
                                                     "gpu_verify_report_dir": str(tmp_path)}))
    assert run.returncode == 2, run
    for node in NODES:
        assert (f"{node}: failed in the preflight stage - Preflight - assert the GPU hand-over works with the "
                "Docker Engine the node gets") in run.stdout, run
        assert report(tmp_path)[node]["unverified"].startswith("failed in the preflight stage"), run
    assert "docker_install_method=distro on Debian 12 installs Docker 20.10.24" in run.stdout, run
    assert run.unchanged, run


def wait_active(node, units, timeout=120):
    deadline = time.monotonic() + timeout
    while not all(active(node, unit) for unit in units):
        assert time.monotonic() < deadline, f"{units} not active on {node}"
        time.sleep(2)


def test_verify_fails_a_node_whose_dockerd_lost_the_nvidia_runtime(only_once, playbook, tmp_path):
    """Another tool rewrote daemon.json without the runtime: the services still run (started
    before), but their next start would not get the GPUs. verify names it; the converge repairs it."""
    drop = ("import json; p='/etc/docker/daemon.json'; d=json.load(open(p)); d.pop('runtimes'); "
            "json.dump(d, open(p, 'w'))")
    assert on(NODES[0], f"cp -p /etc/docker/daemon.json /root/daemon.json.keep && python3 -c \"{drop}\" && "
                        "systemctl restart docker").returncode == 0
    try:
        run = playbook(str(PLAYBOOKS / "verify.yml"), "--limit", NODES[0],
                       "-e", json.dumps({"gpu_verify_report_dir": str(tmp_path)}))
        assert run.returncode == 2, run
        assert ("gpu hand-over (nvidia runtime): expected registered with dockerd, measured missing"
                in run.stdout), run
        assert report(tmp_path)[NODES[0]]["passed"] is False
    finally:
        on(NODES[0], "mv /root/daemon.json.keep /etc/docker/daemon.json && systemctl restart docker")
        wait_active(NODES[0], UNITS)


@pytest.mark.parametrize(("args", "message"), [
    ((), "no --limit was given"),
    (("--limit", "gpu_nodes"), "covers every GPU node"),
    (("--limit", NODES[1], "-e", "nvidia_container_toolkit_version=1.17.8-1"),
     "nvidia_container_toolkit_version is 1.17.8-1, the lock's toolkit_version is 1.18.0-1"),
])
def test_onboarding_is_refused_before_any_change(only_once, playbook, args, message):
    run = playbook(str(PLAYBOOKS / "onboard.yml"), *args)
    assert run.returncode != 0, run
    assert message in run.stdout, run
    assert "PLAY [Converge the GPU nodes" not in run.stdout, run
    assert run.unchanged, run


def test_onboarding_touches_only_the_named_node(only_once, playbook, tmp_path):
    run = playbook(str(PLAYBOOKS / "onboard.yml"), "--limit", NODES[1],
                   "-e", json.dumps({"gpu_verify_report_dir": str(tmp_path)}))
    assert run.clean, run
    assert set(run.recap) == {NODES[1]}, run
    assert set(report(tmp_path)) == {NODES[1]} and report(tmp_path)[NODES[1]]["passed"]


@pytest.fixture
def fleet_on_old_toolkit():
    """Both nodes back on the previous toolkit, as a fleet before an upgrade (apt, by hand)."""
    pins = " ".join(f"{pkg}=1.17.8-1" for pkg in TOOLKIT)
    for node in NODES:
        downgrade = on(node, f"apt-get install -y -q --allow-downgrades --allow-change-held-packages {pins}")
        assert downgrade.returncode == 0, downgrade.stderr
        assert toolkit_version(node) == "1.17.8-1"


def roll(playbook, log, *args):
    drain = {"node_drain_method": "command",
             "node_drain_command": ["sh", "-c", f"echo drain {{node}} >> {log}"],
             "node_drain_undrain_command": ["sh", "-c", f"echo undrain {{node}} >> {log}"]}
    return playbook(str(PLAYBOOKS / "upgrade_driver.yml"), "-e", json.dumps(drain), *args, timeout=1500)


def test_the_roll_stops_at_the_first_node_that_fails_verification(only_once, playbook, fleet_on_old_toolkit,
                                                                  tmp_path):
    log = tmp_path / "drain.log"
    # the lab has no GPU: requiring one makes the first node fail verification after its upgrade
    run = roll(playbook, log, "-e", json.dumps({"gpu_verify_require_gpu": True,
                                                "gpu_verify_report_dir": str(tmp_path)}))
    assert run.returncode != 0, run
    assert f"{NODES[0]}: failed in the verify stage" in run.stdout, run
    assert log.read_text().split("\n")[:-1] == [f"drain {NODES[0]}"]      # drained, and left drained
    assert toolkit_version(NODES[0]) == "1.18.0-1"
    assert not any(active(NODES[0], unit) for unit in UNITS)               # no user lands on it
    assert toolkit_version(NODES[1]) == "1.17.8-1"                          # the next node is untouched
    assert all(active(NODES[1], unit) for unit in UNITS)
    assert report(tmp_path)[NODES[0]]["passed"] is False


def test_the_roll_upgrades_every_node_in_turn_and_brings_the_services_back(only_once, playbook, tmp_path):
    log = tmp_path / "drain.log"
    run = roll(playbook, log, "-e", json.dumps({"gpu_verify_report_dir": str(tmp_path)}))
    assert run.returncode == 0, run
    assert log.read_text().split("\n")[:-1] == [f"{verb} {node}" for node in NODES for verb in ("drain", "undrain")]
    for node in NODES:
        assert toolkit_version(node) == "1.18.0-1"
        assert set(TOOLKIT) <= set(on(node, "apt-mark showhold").stdout.split())
        assert all(active(node, unit) for unit in UNITS)
        status = on(node, "python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:8888/api/status')\"")
        assert "HTTP Error 403" in status.stderr   # Jupyter answers again, behind its token
    assert all(row["passed"] for row in report(tmp_path).values())
