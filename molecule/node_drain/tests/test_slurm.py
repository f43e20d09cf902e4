"""gpufleet.node.node_drain with method slurm against a real one-node Slurm cluster (Debian's
slurmctld/slurmd/munge on the lab node, its own controller), as upgrade_driver.yml uses it:
drain, wait for running jobs, work, give the node back.
"""

from __future__ import annotations

import subprocess
import time

import pytest

NODE = "gpufleet-mol-drain1"


def on(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", NODE, "sh", "-c", command], capture_output=True, text=True,
                          timeout=120, check=False)


def node_state() -> str:
    return on(f"sinfo --noheader --nodes {NODE} --format %T").stdout.strip()


def node_reason() -> str:
    return on(f"sinfo --noheader --nodes {NODE} --format %E").stdout.strip()


def wait_until(predicate, timeout=180, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    diagnosis = on(f"squeue --all; scontrol show node {NODE}").stdout
    raise AssertionError(f"timed out waiting for {what} (node state {node_state()!r}):\n{diagnosis}")


def submit(seconds: int, marker: str) -> str:
    out = on(f"rm -f {marker}; sbatch --parsable --output=/dev/null --wrap 'sleep {seconds}; touch {marker}'")
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip()
    wait_until(lambda: on(f"squeue --noheader --jobs {job} --format %T").stdout.strip() == "RUNNING",
               what=f"job {job} to run")
    return job


@pytest.fixture(autouse=True)
def node_in_service():
    """Each test starts with an idle node and no jobs, and cancels its jobs and resumes the node after."""
    wait_until(lambda: node_state() == "idle", what="the node to be idle")
    yield
    on("scancel --quiet $(squeue --noheader --format %i) 2>/dev/null")
    wait_until(lambda: not on("squeue --noheader").stdout.strip(), what="the test's jobs to end")
    on(f"scontrol update NodeName={NODE} State=RESUME 2>/dev/null")


def test_converge_drained_the_node_and_gave_it_back():
    # converge.yml recorded Slurm's view between drain and undrain
    during = on("cat /root/drain-state").stdout.split()
    assert during[:1] == ["drained"]
    assert node_state() == "idle"


def test_drain_waits_for_a_running_job_and_never_kills_it(playbook):
    job = submit(20, "/root/job-finished")
    start = time.monotonic()
    run = playbook("converge.yml")
    assert run.returncode == 0, run
    # the job ran to its end: the playbook waited instead of cancelling it
    assert on("test -f /root/job-finished").returncode == 0, f"job {job} did not finish"
    assert time.monotonic() - start >= 10
    during = on("cat /root/drain-state").stdout.split()
    assert during == ["drained"], during  # drained, and no job running while the work happened
    # given back: no drain flag right after the run; Slurm may flag the node not responding
    # ("idle*") until its next ping to slurmd after the job's end, so wait for it to take jobs
    assert "drain" not in node_state(), node_state()
    wait_until(lambda: node_state() == "idle", timeout=240, what="the node to take jobs again")
    assert "Wait until no Slurm job runs on the node" in run.stdout


def test_a_node_drained_before_the_run_stays_drained_with_its_reason(playbook):
    on(f"scontrol update NodeName={NODE} State=DRAIN Reason='operator: bad DIMM'")
    wait_until(lambda: node_state() == "drained", what="the operator's drain")
    run = playbook("converge.yml")
    assert run.returncode == 0, run
    assert "was already drained or cordoned before this run: it stays that way" in run.stdout
    assert node_state() == "drained"
    assert node_reason() == "operator: bad DIMM"


def test_jobs_outliving_the_timeout_stop_the_run_and_keep_the_node_drained(playbook):
    job = submit(300, "/root/long-job-finished")
    run = playbook("converge.yml", "-e", "node_drain_timeout=10")
    assert run.returncode != 0
    assert f"Slurm job(s) {job} still run after node_drain_timeout=10 s" in run.stdout, run
    assert "Give the node back" not in run.stdout.split("still run after", 1)[1]
    assert node_state() in ("draining", "drained")
    # the job was not cancelled
    assert on(f"squeue --noheader --jobs {job} --format %T").stdout.strip() == "RUNNING"
