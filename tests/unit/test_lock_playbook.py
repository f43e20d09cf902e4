"""playbooks/lock.yml refuses a fingerprint reference that is not one GPU node, before it asks
the registry or writes the lock: a name matching no host would otherwise record nothing and
exit 0, and a group would have every node write the lock. It sends the registry credentials for
a pull token only over https and only to the registry's own host or a listed token host (a fake
registry on 127.0.0.1 names the realm)."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.parametrize("reference", ["gpu-node-99", "gpu_nodes", "gpu-node-0*"])
def test_a_reference_that_is_not_one_gpu_node_is_refused_before_anything(tmp_path, reference):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    gpu_nodes:\n      hosts:\n"
                         "        gpu-node-01: {ansible_connection: local}\n"
                         "        gpu-node-02: {ansible_connection: local}\n"
                         # what every playbook's first play asks of an inventory (the pin lock.yml writes aside)
                         "      vars:\n        jupyter_container_token: " + "t" * 40 + "\n"
                         "        ssh_container_enabled: false\n")
    lock = tmp_path / "gpufleet_lock.yml"
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), str(ROOT / "playbooks" / "lock.yml"),
         "-e", f"gpufleet_lock_fingerprint_from={reference}", "-e", f"gpufleet_lock_file={lock}",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "gpufleet_lock_fingerprint_from must name one host of the group gpu_nodes" in out, out
    assert f"got '{reference}'" in out, out
    assert "Ask the registry" not in out and not lock.exists(), out


# --- the pull token: where the registry credentials may go ---------------------------------------

DIGEST = "sha256:" + "ab" * 32
PASSWORD = "s3cret-pass"


class _FakeRegistry(ThreadingHTTPServer):
    """A registry on 127.0.0.1 that asks for a Bearer token from the realm it is told to name and
    serves a token on /token; it records every request it gets."""

    daemon_threads = True

    def __init__(self, realm):
        super().__init__(("127.0.0.1", 0), _FakeRegistryHandler)
        self.realm = realm.replace("PORT", str(self.server_port))
        self.requests = []


class _FakeRegistryHandler(BaseHTTPRequestHandler):
    server: _FakeRegistry

    def log_message(self, *args):
        pass

    def _record(self):
        self.server.requests.append((self.command, self.path, dict(self.headers.items())))

    def do_HEAD(self):
        self._record()
        if not self.path.startswith("/v2/team/pytorch/manifests/"):
            self.send_response(404)
        elif self.headers.get("Authorization") == "Bearer t":
            self.send_response(200)
            self.send_header("Docker-Content-Digest", DIGEST)
        else:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{self.server.realm}",service="x"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._record()
        body = json.dumps({"token": "t"}).encode() if self.path.startswith("/token") else b"{}"
        self.send_response(200 if self.path.startswith("/token") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_registry(request):
    server = _FakeRegistry(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _lock(tmp_path, server, username):
    registry = f"127.0.0.1:{server.server_port}"
    node = {
        "ansible_connection": "local",
        "pytorch_image_repository": f"{registry}/team/pytorch",
        "pytorch_image_tag": "2.9.1-test",
        "docker_insecure_registries": [registry],
        "pytorch_image_registry_username": username,
        "pytorch_image_registry_password": PASSWORD if username else "",
        # what every playbook's first play asks of an inventory
        "jupyter_container_token": "t" * 40,
        "ssh_container_enabled": False,
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"gpu_nodes": {"hosts": {"gpu-node-01": node}}}}}))
    lock = tmp_path / "group_vars" / "all" / "gpufleet_lock.yml"
    # No proxy and no netrc: nothing but the fake registry on 127.0.0.1 is ever asked.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    # COLUMNS and the json result format: ansible-core 2.17 wraps long messages otherwise
    env.update(ANSIBLE_NOCOLOR="1", NO_PROXY="*", no_proxy="*", NETRC=str(tmp_path / "no-netrc"), COLUMNS="1000",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), str(ROOT / "playbooks" / "lock.yml"),
         "-e", f"gpufleet_lock_file={lock}", "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env=env)
    return proc, proc.stdout + proc.stderr, lock


@pytest.mark.parametrize(
    ("fake_registry", "reason"),
    [
        # the registry's own host, but the registry is insecure http: the password would travel in clear
        pytest.param("http://127.0.0.1:PORT/token", "it is plain http, even where it is the registry's own host",
                     id="own-host-over-http"),
        # never contacted: refused before any request
        pytest.param("https://token.attacker.invalid/token",
                     "token.attacker.invalid is neither the registry's own host (127.0.0.1)", id="other-host"),
    ],
    indirect=["fake_registry"],
)
def test_credentials_never_follow_a_realm_the_rule_refuses(tmp_path, fake_registry, reason):
    proc, out, lock = _lock(tmp_path, fake_registry, username="ci-bot")
    assert proc.returncode != 0, out
    assert reason in out, out
    assert fake_registry.realm in out, out
    assert "registry credentials are sent only over https" in out, out
    assert "pytorch_image_registry_token_hosts" in out, out
    assert PASSWORD not in out, out
    assert [(m, p) for m, p, _headers in fake_registry.requests] == [("HEAD", "/v2/team/pytorch/manifests/2.9.1-test")]
    assert not any(p.startswith("/token") or "Authorization" in h for _method, p, h in fake_registry.requests)
    assert not lock.exists(), out


@pytest.mark.parametrize("fake_registry", ["http://127.0.0.1:PORT/token"], indirect=True)
def test_an_anonymous_read_follows_the_http_realm_and_writes_the_lock(tmp_path, fake_registry):
    proc, out, lock = _lock(tmp_path, fake_registry, username="")
    assert proc.returncode == 0, out
    token_requests = [(p, h) for m, p, h in fake_registry.requests if m == "GET"]
    assert [p for p, _headers in token_requests] == ["/token?service=x&scope=repository%3Ateam/pytorch%3Apull"]
    assert "Authorization" not in token_requests[0][1]
    heads = [h.get("Authorization") for m, _path, h in fake_registry.requests if m == "HEAD"]
    assert heads == [None, "Bearer t"]
    written = yaml.safe_load(lock.read_text())["gpu_verify_lock"]
    assert written == {"image_repository": f"127.0.0.1:{fake_registry.server_port}/team/pytorch",
                       "image_tag": "2.9.1-test", "image_digest": DIGEST}
