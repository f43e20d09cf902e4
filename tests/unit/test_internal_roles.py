"""The internal roles (container_service, apt_helpers) refuse any caller but the collection's own
roles, before they read or change anything: a play that lists one, and a role of another
collection or of the playbook's own roles/ that includes one, both stop with a message that
names the caller. (That the collection's roles still get through is what every Molecule
scenario's converge shows.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# apt_helpers: both entry points; container_service with its one required value, so the
# argument spec passes and the refusal is the role's own.
CALLS = {
    "container_service": ({"name": "gpufleet.node.container_service"}, {"container_service_name": "probe"}),
    "apt_helpers": ({"name": "gpufleet.node.apt_helpers"}, {}),
    "apt_helpers:hold": ({"name": "gpufleet.node.apt_helpers", "tasks_from": "hold"}, {}),
}


def task(call, indent):
    """The include_role task for CALLS[call] (JSON is YAML), indented by `indent` spaces."""
    args, variables = CALLS[call]
    lines = ["- name: Borrow an internal role", f"  ansible.builtin.include_role: {json.dumps(args)}",
             f"  vars: {json.dumps(variables)}"]
    return "".join(" " * indent + line + "\n" for line in lines)


def run(tmp_path, play):
    (tmp_path / "play.yml").write_text(play)
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml")],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
             "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"), "ANSIBLE_ROLES_PATH": str(tmp_path / "roles")})
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_play_that_lists_an_internal_role_is_refused(tmp_path, call):
    role = call.split(":")[0]
    rc, out = run(tmp_path, f"""---
- hosts: localhost
  gather_facts: false
  tasks:
{task(call, 4)}""")
    assert rc != 0, out
    assert f"gpufleet.node.{role} is internal to the collection" in out, out
    assert "it was listed in a play" in out, out
    assert "changed=0" in out, out


@pytest.mark.parametrize("call", sorted(CALLS))
def test_another_role_that_includes_an_internal_role_is_refused(tmp_path, call):
    role = call.split(":")[0]
    tasks = tmp_path / "roles" / "site_local" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text("---\n" + task(call, 0))
    rc, out = run(tmp_path, """---
- hosts: localhost
  gather_facts: false
  roles: [site_local]
""")
    assert rc != 0, out
    assert f"gpufleet.node.{role} is internal to the collection" in out, out
    assert "it was called by site_local" in out, out
