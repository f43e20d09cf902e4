"""Jupyter and SSH from the pinned image, tested with real clients from the lab host.

wb1 pulls the image by digest and publishes Jupyter on 127.0.0.1; wb2 is air-gapped (archive)
and publishes Jupyter on all interfaces with TLS. The image is the lab's STAND-IN for
pytorch/pytorch (lab/standin/build-workbench-image.sh): CPU torch 2.13, JupyterLab, sshd.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
import yaml
from ssh_audit import exitcodes

IMAGE_ID = os.environ.get("GPUFLEET_LAB_WORKBENCH_ID", "")
LAB_KEY = Path(os.environ.get("GPUFLEET_LAB_STATE", "/var/lib/gpufleet-lab")) / "ssh/researcher_ed25519"
TLS_DIR = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "tls"
USER = "researcher"
UNITS = ("gpufleet-jupyter", "gpufleet-ssh")


@pytest.fixture
def name(host):
    return host.backend.get_hostname()


@pytest.fixture
def airgapped(host):
    return "airgapped" in host.ansible.get_variables().get("group_names", [])


def node_ip(name):
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return subprocess.check_output(["docker", "inspect", "-f", template, name], text=True).strip()


@pytest.fixture
def ip(name):
    return node_ip(name)


@pytest.fixture
def only_once(host):
    """Tests that cost a playbook run or a node restart run on the first node only."""
    if host.backend.get_hostname() != "gpufleet-mol-wb1":
        pytest.skip("runs on gpufleet-mol-wb1 only")


@pytest.fixture
def token(host):
    return host.ansible.get_variables()["jupyter_container_token"]


def ssh_argv(ip, command, user=USER, key=LAB_KEY, *options):
    """The OpenSSH client, as a user or a CI job would run it (host key not pinned here)."""
    return ["ssh", "-p", "2222", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
            *options, f"{user}@{ip}", command]


def ssh(ip, command, user=USER, key=LAB_KEY, *options):
    return subprocess.run(ssh_argv(ip, command, user, key, *options),
                          capture_output=True, text=True, timeout=120, check=False)


def host_key(ip):
    out = subprocess.run(["ssh-keyscan", "-p", "2222", "-t", "ed25519", ip],
                         capture_output=True, text=True, timeout=30, check=False).stdout
    return out.split(None, 1)[1].strip() if out else ""


def wait_for_services(host, ip, timeout=180):
    """Both units active and sshd answering a login (what a user waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(host.service(unit).is_running for unit in UNITS) and ssh(ip, "true").returncode == 0:
            return
        time.sleep(2)
    journal = host.run("journalctl -u gpufleet-ssh -u gpufleet-jupyter -n 60 --no-pager").stdout
    pytest.fail(f"services did not come back within {timeout} s:\n{journal}")


def jupyter_api_on_node(host, method, path, token):
    """(status, JSON body) of a Jupyter REST call made on the node itself, with the token."""
    script = ("import json, sys, urllib.request, urllib.error\n"
              f"req = urllib.request.Request('http://127.0.0.1:8888{path}', method='{method}', "
              f"data=b'{{}}' if '{method}' == 'POST' else None, headers={{'Authorization': 'token {token}'}})\n"
              "try:\n    r = urllib.request.urlopen(req, timeout=60); print(r.status, r.read().decode() or 'null')\n"
              "except urllib.error.HTTPError as e:\n    print(e.code, 'null')\n")
    status, body = host.check_output(f"python3 -c \"{script}\"").split(" ", 1)
    return int(status), json.loads(body)


def jupyter_from_node(host, path, token=None):
    """HTTP status of a Jupyter URL, asked on the node itself (wb1 publishes on loopback only)."""
    header = f", headers={{'Authorization': 'token {token}'}}" if token else ""
    script = ("import urllib.request, urllib.error\n"
              f"req = urllib.request.Request('http://127.0.0.1:8888{path}'{header})\n"
              "try:\n    print(urllib.request.urlopen(req, timeout=10).status)\n"
              "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    return int(host.check_output(f"python3 -c \"{script}\""))


# --- SSH ---------------------------------------------------------------------------------

def test_listed_key_logs_in_to_workspace_with_torch(ip):
    result = ssh(ip, 'pwd; id -u; command -v python3; python3 -c "import torch; print(torch.__version__)"')
    assert result.returncode == 0, result.stderr
    cwd, uid, python, version = result.stdout.split()
    assert (cwd, uid) == ("/workspace", "1000")
    assert python == "/opt/pytorch/bin/python3"       # the image's interpreter, not Debian's
    assert version.startswith("2.13.0")


def test_login_shell_keeps_the_images_python(ip):
    result = ssh(ip, "bash -lc 'command -v python3'")
    assert result.stdout.strip() == "/opt/pytorch/bin/python3", result.stderr


def test_password_root_and_unlisted_keys_are_refused(ip, tmp_path):
    password = ssh(ip, "true", USER, LAB_KEY, "-o", "PubkeyAuthentication=no",
                   "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255
    assert "Permission denied (publickey)" in password.stderr  # the only method offered

    root = ssh(ip, "true", "root")
    assert root.returncode == 255 and "Permission denied" in root.stderr

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    unlisted = ssh(ip, "true", USER, stranger)
    assert unlisted.returncode == 255 and "Permission denied" in unlisted.stderr


def test_sshd_runs_with_reduced_capabilities_and_never_privileged(host):
    inspect = json.loads(host.check_output("docker inspect gpufleet-ssh gpufleet-jupyter"))
    for container in inspect:
        assert container["HostConfig"]["Privileged"] is False
        assert container["HostConfig"]["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in container["HostConfig"]["SecurityOpt"]
    jupyter = next(c for c in inspect if c["Name"] == "/gpufleet-jupyter")
    assert jupyter["Config"]["User"] == "1000:1000"
    for container in inspect:   # what multi-GPU training needs: shared memory and ulimits
        assert container["HostConfig"]["ShmSize"] == 16 * 1024**3
        limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in container["HostConfig"]["Ulimits"]}
        assert limits == {"memlock": (8388608, 8388608), "stack": (67108864, 67108864)}   # lab memlock cap


def test_sshd_passes_ssh_audit_with_no_failure(ip):
    """ssh-audit (PyPI), as a security review would run it: no algorithm it fails, no known CVE."""
    audit = subprocess.run([str(Path(sys.executable).parent / "ssh-audit"), "--json", "--port", "2222", ip],
                           capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(audit.stdout)
    failed = [(section, entry["algorithm"], entry["notes"]["fail"])
              for section in ("kex", "key", "enc", "mac") for entry in report[section]
              if entry.get("notes", {}).get("fail")]
    assert failed == [] and report["cves"] == [], (failed, report["cves"])
    assert audit.returncode in (exitcodes.GOOD, exitcodes.WARNING), audit   # warnings: README lists them
    host_keys = {entry["algorithm"]: entry.get("keysize") for entry in report["key"]}
    assert "ecdsa-sha2-nistp256" not in host_keys and "ssh-rsa" not in host_keys, host_keys
    assert all(size >= 3072 for algorithm, size in host_keys.items() if algorithm.startswith("rsa-")), host_keys


def test_one_services_container_cannot_reach_anothers_ports(host, ip):
    """icc is off: from the SSH container, Jupyter's container address does not answer (the node
    itself still does: that is how the loopback publish reaches it)."""
    jupyter_ip = host.check_output("docker inspect -f '{{.NetworkSettings.IPAddress}}' gpufleet-jupyter")
    assert jupyter_ip
    probe = (f"python3 -c \"import socket; socket.create_connection(('{jupyter_ip}', 8888), timeout=5); "
             "print('reached')\"")
    assert host.run(probe).stdout.strip() == "reached"
    inside = ssh(ip, probe)
    assert inside.returncode != 0 and "reached" not in inside.stdout, inside


# --- Jupyter -----------------------------------------------------------------------------

def test_jupyter_on_loopback_needs_the_token(host, ip, airgapped, token):
    if airgapped:
        pytest.skip("wb1 publishes on loopback")
    assert jupyter_from_node(host, "/api/status") == 403
    assert jupyter_from_node(host, "/api/status", token) == 200
    with pytest.raises(requests.ConnectionError):     # nothing outside the node reaches it
        requests.get(f"http://{ip}:8888/api/status", timeout=5)


def test_jupyter_over_tls_runs_code_in_a_kernel(ip, airgapped, name, token):
    if not airgapped:
        pytest.skip("wb2 publishes on all interfaces with TLS")
    base, cert = f"https://{ip}:8888", str(TLS_DIR / f"{name}.crt")
    assert requests.get(f"{base}/api/status", verify=cert, timeout=10).status_code == 403
    auth = {"Authorization": f"token {token}"}
    assert requests.get(f"{base}/api/status", headers=auth, verify=cert, timeout=10).status_code == 200
    with pytest.raises(requests.ConnectionError):     # no plain HTTP beside TLS
        requests.get(f"http://{ip}:8888/api/status", timeout=5)

    kernel = requests.post(f"{base}/api/kernels", headers=auth, json={"name": "python3"}, verify=cert,
                           timeout=60).json()["id"]
    try:
        ws = websocket.create_connection(f"wss://{ip}:8888/api/kernels/{kernel}/channels", header=auth,
                                         sslopt={"ca_certs": cert}, timeout=60)
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": "import torch\nprint(int(torch.tensor([6]) * 7), torch.__version__)", "silent": False,
                        "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        output = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            reply = json.loads(ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if reply["msg_type"] == "stream":
                output += reply["content"]["text"]
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                break
        ws.close()
        assert output.split()[:1] == ["42"] and output.split()[1].startswith("2.13.0"), output
    finally:
        requests.delete(f"{base}/api/kernels/{kernel}", headers=auth, verify=cert, timeout=30)


def test_token_is_nowhere_but_its_file(host, token):
    token_file = host.file("/etc/gpufleet/jupyter/secrets/token")
    assert token_file.mode == 0o600 and token_file.uid == 1000
    assert token_file.content_string.strip() == token
    for command in ("systemctl cat gpufleet-jupyter", "ps auxwwe", "docker inspect gpufleet-jupyter",
                    "journalctl --no-pager -u gpufleet-jupyter", "journalctl --no-pager"):
        out = host.check_output(f"{command} 2>&1 || true")
        assert token not in out, command
    assert host.check_output("docker inspect -f '{{json .Mounts}}' gpufleet-jupyter").count('"RW":false') >= 2


def test_no_run_output_holds_the_token_or_an_unsalted_hash_of_it(host, name, playbook, token, only_once, tmp_path):
    """-vvvv --diff of a run that writes a new token (restarting Jupyter) and of the run that puts
    the old one back: neither token, nor its SHA-1, SHA-256 or MD5 (with or without a newline),
    appears anywhere. The token comes from a file, as from Vault (-e on the command line would be
    echoed by ansible-playbook itself at -vvvv)."""
    rotated = "rotated-" + secrets.token_hex(20)
    forbidden = {}
    for secret in (rotated, token):
        forbidden[secret] = secret
        for form in (secret, secret + "\n"):
            for digest in (hashlib.sha1, hashlib.sha256, hashlib.md5):
                forbidden[f"{digest.__name__}({form!r})"] = digest(form.encode()).hexdigest()
    for value in (rotated, token):
        extra = tmp_path / "secret.yml"
        extra.write_text(json.dumps({"jupyter_container_token": value}))
        run = playbook("converge.yml", "--limit", name, "--diff", "-vvvv", "-e", f"@{extra}")
        assert run.returncode == 0, run
        restarts = run.stdout.split("container_service : Restart the service on a new unit, image, file or driver]")[1:]
        assert any(part.split("\nTASK [", 1)[0].count("changed: [") for part in restarts), run
        leaked = [label for label, text in forbidden.items() if text in run.stdout]
        assert leaked == [], leaked
    assert host.file("/etc/gpufleet/jupyter/secrets/token").content_string.strip() == token


# --- services, data and images -----------------------------------------------------------

def test_services_are_enabled_and_run_the_pinned_image(host, airgapped):
    for unit in UNITS:
        assert host.service(unit).is_enabled and host.service(unit).is_running
        container = json.loads(host.check_output(f"docker inspect {unit}"))[0]
        assert container["Image"] == IMAGE_ID
        unit_text = host.check_output(f"systemctl cat {unit}")
        assert "/usr/bin/docker run --name" in unit_text and "--pull never" in unit_text
        assert "Restart=always" in unit_text and "After=docker.service" in unit_text
    if airgapped:   # the archive node runs it by image ID, having never talked to the registry
        assert f"{IMAGE_ID} " in host.check_output("systemctl cat gpufleet-ssh")


def test_workspace_survives_restart_redeploy_and_reboot(host, ip, name, playbook, only_once):
    marker = uuid.uuid4().hex
    wrote = ssh(ip, f"echo {marker} > /workspace/keep.txt && mkdir -p /models/m && touch /data/d /logs/l")
    assert wrote.returncode == 0, wrote.stderr
    key_before = host_key(ip)
    assert key_before

    host.check_output("systemctl restart gpufleet-ssh gpufleet-jupyter")
    wait_for_services(host, ip)
    assert ssh(ip, "cat /workspace/keep.txt").stdout.strip() == marker
    assert host_key(ip) == key_before

    try:
        # Redeploy: a changed setting gives a new unit, and the role restarts the service on it.
        ssh_started = host.check_output("docker inspect -f '{{.State.StartedAt}}' gpufleet-ssh")
        jupyter_started = host.check_output("docker inspect -f '{{.State.StartedAt}}' gpufleet-jupyter")
        run = playbook("converge.yml", "--limit", name, "-e", '{"ssh_container_memory": "2g"}')
        assert run.returncode == 0, run
        # The run says what it restarts, and leaves the other service alone.
        assert f"gpufleet-ssh on {name} restarts, ending the processes running in it: its unit changed" in run.stdout
        assert f"gpufleet-jupyter on {name} restarts" not in run.stdout, run
        assert host.check_output("docker inspect -f '{{.State.StartedAt}}' gpufleet-jupyter") == jupyter_started
        assert host.check_output("docker inspect -f '{{.HostConfig.Memory}}' gpufleet-ssh") == str(2 * 1024**3)
        assert host.check_output("docker inspect -f '{{.State.StartedAt}}' gpufleet-ssh") != ssh_started
        wait_for_services(host, ip)
        assert ssh(ip, "cat /workspace/keep.txt").stdout.strip() == marker
        assert host_key(ip) == key_before

        # Reboot: restart the whole node container; both services come back by themselves.
        subprocess.run(["docker", "restart", "-t", "30", name], check=True, capture_output=True, timeout=120)
        ip = node_ip(name)   # Docker may hand the restarted node another address
        wait_for_services(host, ip, timeout=300)
        kept = ssh(ip, "cat /workspace/keep.txt; ls -d /models/m /data/d /logs/l").stdout.split()
        assert kept[0] == marker and sorted(kept[1:]) == ["/data/d", "/logs/l", "/models/m"]
        assert host_key(ip) == key_before
    finally:
        back = playbook("converge.yml", "--limit", name)   # back to the scenario's settings
        assert back.returncode == 0, back


def test_running_work_survives_a_dockerd_restart(host, ip, name, playbook, token, only_once):
    """A daemon.json change restarts dockerd (a new mirror, a toolkit upgrade); with live-restore the
    services' containers stay, and so do a kernel, a process and an open SSH session started before."""
    ids = host.check_output("docker inspect -f '{{.Id}}' gpufleet-ssh gpufleet-jupyter")
    status, kernel = jupyter_api_on_node(host, "POST", "/api/kernels", token)
    assert status == 201, kernel
    started = ssh(ip, "nohup sleep 86400 >/dev/null 2>&1 & echo $!")
    assert started.returncode == 0, started
    pid = started.stdout.strip()
    # An open session that answers only once it is sent a line, after the restart.
    session = subprocess.Popen(ssh_argv(ip, "echo connected; read -r line; echo still-connected $line", USER, LAB_KEY,
                                        "-o", "LogLevel=ERROR"),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert session.stdout.readline().strip() == "connected"
        dockerd = host.check_output("systemctl show --property MainPID --value docker")
        run = playbook("prepare.yml", "--limit", name, "-e", '{"docker_daemon_options": {"max-concurrent-uploads": 3}}')
        assert run.returncode == 0, run
        assert host.check_output("systemctl show --property MainPID --value docker") != dockerd   # it restarted
        time.sleep(8)   # past the units' RestartSec: they have noticed the restart by now
        wait_for_services(host, ip)
        assert host.check_output("docker inspect -f '{{.Id}}' gpufleet-ssh gpufleet-jupyter") == ids
        assert ssh(ip, f"kill -0 {pid}").returncode == 0
        assert jupyter_api_on_node(host, "GET", f"/api/kernels/{kernel['id']}", token)[0] == 200
        output, _errors = session.communicate("after-the-restart\n", timeout=60)
        assert session.returncode == 0 and "still-connected after-the-restart" in output, output
        journal = host.check_output("journalctl --no-pager -u gpufleet-jupyter -u gpufleet-ssh -n 200")
        assert "kept running while dockerd restarted" in journal
    finally:
        session.kill()
        ssh(ip, f"kill {pid}")
        jupyter_api_on_node(host, "DELETE", f"/api/kernels/{kernel['id']}", token)
        back = playbook("prepare.yml", "--limit", name)   # back to the scenario's daemon.json
        assert back.returncode == 0, back


def test_unchanged_settings_do_not_restart_anything(host, playbook, only_once):
    started = host.check_output("docker inspect -f '{{.State.StartedAt}}' gpufleet-ssh gpufleet-jupyter")
    run = playbook("converge.yml")
    assert run.clean, run
    assert host.check_output("docker inspect -f '{{.State.StartedAt}}' gpufleet-ssh gpufleet-jupyter") == started
    check = playbook("converge.yml", "--check", "--diff")
    assert check.clean, check


def test_digest_mismatch_fails_and_the_services_keep_running(host, ip, name, airgapped, playbook):
    if airgapped:
        pytest.skip("the registry node (the archive mismatch: test_pytorch_image.py)")
    before = host.check_output("docker inspect -f '{{.Id}} {{.Image}}' gpufleet-ssh gpufleet-jupyter")
    unit = host.file("/etc/systemd/system/gpufleet-ssh.service").sha256sum
    run = playbook("converge.yml", "--limit", name, "-e", json.dumps({"pytorch_image_digest": "sha256:" + "1" * 64}))
    assert run.returncode != 0, run
    assert "manifest unknown" in run.stdout or "not found" in run.stdout, run
    assert "gpufleet.node.container_service" not in run.stdout, run      # the services stage never ran
    assert host.check_output("docker inspect -f '{{.Id}} {{.Image}}' gpufleet-ssh gpufleet-jupyter") == before
    assert host.file("/etc/systemd/system/gpufleet-ssh.service").sha256sum == unit
    assert ssh(ip, "true").returncode == 0


@pytest.mark.parametrize(("extra", "named"), [
    ({"pytorch_image_digest": "sha256:1234"}, "pytorch_image_digest"),
    ({"jupyter_container_token": "short"}, "jupyter_container_token must be at least 32 characters"),
    ({"jupyter_container_token": ""}, "jupyter_container_token is empty"),
    ({"ssh_container_port": 70000}, "ssh_container_port must be a port from 1 to 65535"),
    ({"ssh_container_users": [{"name": "ada", "uid": 1001, "authorized_keys": []}]},
     "ssh_container_users[0].authorized_keys must be a list of OpenSSH public keys"),
    ({"ssh_container_users": [{"name": "ada", "uid": 1001}]}, "authorized_keys"),
    ({"jupyter_container_listen": "0.0.0.0", "jupyter_container_tls_cert": "", "jupyter_container_tls_key": ""},
     "Jupyter is published beyond loopback only with TLS"),
    ({"jupyter_container_gpus": "several"}, "jupyter_container_gpus"),
])
def test_bad_input_fails_before_any_change_naming_the_variable(host, name, playbook, extra, named, only_once):
    units = [host.file(f"/etc/systemd/system/{unit}.service").sha256sum for unit in UNITS]
    run = playbook("converge.yml", "--limit", name, "-e", json.dumps(extra))
    assert run.returncode != 0
    assert named in run.stdout, run
    assert "PLAY [Converge the pinned image" not in run.stdout, run   # stopped by the validation play
    assert run.unchanged, run
    assert [host.file(f"/etc/systemd/system/{unit}.service").sha256sum for unit in UNITS] == units


# --- verification, fleet report, lock (gpufleet.node.gpu_verify, playbooks/verify.yml, lock.yml) ---

REPO = Path(__file__).resolve().parents[3]


def verify(playbook, report_dir, *args):
    return playbook(str(REPO / "playbooks" / "verify.yml"), "-e", json.dumps(
        {"gpu_verify_image": IMAGE_ID, "gpu_verify_report_dir": str(report_dir)}), *args)


def fingerprints(report_dir):
    rows = json.loads((report_dir / "fleet-report.json").read_text())["hosts"]
    return {row["host"]: {d: v.get("sha256") for d, v in row["fingerprint"]["dtypes"].items()} for row in rows}


def test_verify_probes_torch_in_the_image_and_reports_the_fleet(only_once, playbook, tmp_path):
    run = verify(playbook, tmp_path)
    assert run.returncode == 0 and run.unchanged, run
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    assert report["summary"] == {"hosts": 2, "passed": 2, "failed": []}
    for row in report["hosts"]:
        assert row["torch"] == "2.13.0+cpu" and row["cuda_available"] is False and row["gpus"] == 0
        checks = {f["check"]: f for f in row["findings"]}
        assert checks["matmul_float32@cpu"]["passed"] and checks["torch"]["measured"] == "2.13.0+cpu"
        assert checks["image (gpufleet-jupyter)"]["passed"] and checks["image (probe)"]["passed"]
    assert "2 of 2 hosts pass." in (tmp_path / "fleet-report.md").read_text()
    assert (tmp_path / "fleet-report.html").read_text().startswith("<!DOCTYPE html>")
    assert "gpufleet-mol-wb1" in run.task("gpufleet.node.gpu_verify : Show the fleet")
    # the numerical fingerprint: one node pulled by digest, one loaded the archive; the same image
    # and CPU, so the same bits, and one group without anyone differing
    found = fingerprints(tmp_path)
    assert found["gpufleet-mol-wb1"] == found["gpufleet-mol-wb2"], found
    assert set(found["gpufleet-mol-wb1"]) == {"float32", "bfloat16"} and all(found["gpufleet-mol-wb1"].values())
    (group,) = report["fingerprints"]
    assert group["hosts"] == ["gpufleet-mol-wb1", "gpufleet-mol-wb2"] and group["differs"] == [], group

    check = verify(playbook, tmp_path / "check", "--check")
    assert check.clean, check


def test_a_node_that_drifted_to_another_image_is_flagged(only_once, host, playbook, tmp_path):
    wb2 = host.get_host("ansible://gpufleet-mol-wb2", ansible_inventory=host.backend.ansible_inventory)
    wb2.run("docker rm -f drift-src")
    wb2.check_output(f"docker run --name drift-src {IMAGE_ID} touch /drifted")
    drift_id = wb2.check_output("docker commit drift-src gpufleet-lab/drifted:1")
    wb2.run("docker rm -f drift-src")
    try:
        moved = playbook("converge.yml", "--limit", "gpufleet-mol-wb2", "-e",
                         json.dumps({"jupyter_container_image": drift_id}))
        assert moved.returncode == 0, moved
        run = verify(playbook, tmp_path)
        assert run.returncode != 0
        assert f"image (gpufleet-jupyter): expected {os.environ.get('GPUFLEET_LAB_WORKBENCH_DIGEST')}" in run.stdout
        assert f"measured {drift_id}" in run.stdout, run
        report = json.loads((tmp_path / "fleet-report.json").read_text())
        assert report["summary"]["failed"] == ["gpufleet-mol-wb2"]
        assert report["drift"]["image"] == ["gpufleet-mol-wb2"]
        assert "gpufleet-mol-wb2 (drift: image)" in (tmp_path / "fleet-report.md").read_text()
        assert 'class="drift"' in (tmp_path / "fleet-report.html").read_text()
    finally:
        back = playbook("converge.yml", "--limit", "gpufleet-mol-wb2")
        assert back.returncode == 0, back
        wb2.run("docker image rm gpufleet-lab/drifted:1")


def test_lock_resolves_the_tag_to_its_digest_in_the_registry(only_once, playbook, tmp_path):
    lock_file = tmp_path / "group_vars" / "all" / "gpufleet_lock.yml"
    lock_file.parent.mkdir(parents=True)
    lock_file.write_text("gpu_verify_lock:\n  driver_version: 580.95.05\n  image_digest: sha256:old\n")
    run = playbook(str(REPO / "playbooks" / "lock.yml"), "-e", json.dumps({"gpufleet_lock_file": str(lock_file)}))
    assert run.returncode == 0, run
    lock = yaml.safe_load(lock_file.read_text())["gpu_verify_lock"]
    assert lock["image_digest"] == os.environ["GPUFLEET_LAB_WORKBENCH_DIGEST"]
    assert lock["image_tag"] == "2.13-cpu-standin"
    assert lock["driver_version"] == "580.95.05"      # what the admin set is kept


# --- numerical fingerprint (the probe's seeded training steps, hashed bit for bit) ---

def test_a_node_that_computes_other_bits_fails_against_the_locked_fingerprint(only_once, playbook, tmp_path):
    """lock.yml records wb1's fingerprint; wb2's probe then runs with one CPU thread (another
    summation order, as another BLAS or GPU would give) and verify names it, and the step."""
    lock_file = tmp_path / "group_vars" / "all" / "gpufleet_lock.yml"
    lock_file.parent.mkdir(parents=True)
    lock_file.write_text("gpu_verify_lock:\n  torch: 2.13.0+cpu\n")
    record = playbook(str(REPO / "playbooks" / "lock.yml"), "-e", json.dumps(
        {"gpufleet_lock_file": str(lock_file), "gpufleet_lock_fingerprint_from": "gpufleet-mol-wb1",
         "gpu_verify_image": IMAGE_ID}))
    assert record.returncode == 0, record
    locked = yaml.safe_load(lock_file.read_text())["gpu_verify_lock"]
    assert locked["torch"] == "2.13.0+cpu"                     # kept
    (name, shas), = locked["fingerprints"].items()
    assert name.startswith("cpu ") and set(shas) == {"float32", "bfloat16"}, locked
    one_thread = tmp_path / "one-thread.yml"   # a host variable for wb2 only
    one_thread.write_text(yaml.safe_dump({"all": {"hosts": {"gpufleet-mol-wb2": {
        "gpu_verify_docker_args": ["--ipc", "host", "-e", "OMP_NUM_THREADS=1"]}}}}))
    lock = {"image_digest": os.environ["GPUFLEET_LAB_WORKBENCH_DIGEST"], "image_id": IMAGE_ID,
            "torch": "2.13.0+cpu", "fingerprints": locked["fingerprints"]}
    run = playbook(str(REPO / "playbooks" / "verify.yml"), "-i", str(one_thread), "-e", json.dumps(
        {"gpu_verify_image": IMAGE_ID, "gpu_verify_report_dir": str(tmp_path), "gpu_verify_lock": lock}))
    assert run.returncode != 0, run
    assert f"fingerprint (float32): expected {shas['float32']}" in run.stdout, run
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    assert report["summary"]["failed"] == ["gpufleet-mol-wb2"], report["summary"]
    assert report["drift"]["fingerprint"] == ["gpufleet-mol-wb2"]
    (group,) = report["fingerprints"]
    assert group["reference"]["float32"] == {"sha256": shas["float32"], "from": "lock"}
    differs = {d["dtype"]: d for d in group["differs"]}
    assert differs["float32"]["host"] == "gpufleet-mol-wb2" and differs["float32"]["first_step"] == 1, differs
    assert "gpufleet-mol-wb2: float32 differs" in (tmp_path / "fleet-report.md").read_text()
