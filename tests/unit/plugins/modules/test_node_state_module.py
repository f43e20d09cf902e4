"""node_state and its filters through real Ansible on the controller: files written by the copy and
template modules must be recognised as unchanged (or the roles' guards would never skip), and one
byte, a mode or an owner off must not be (or the guards would leave drift in place)."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    d: "{dir}"
    wanted: "{{{{ {{'log-driver': 'json-file', 'live-restore': true}} | gpufleet.node.daemon_json_render }}}}"
  tasks:
    - ansible.builtin.copy: {{content: "{{{{ wanted }}}}", dest: "{{{{ d }}}}/daemon.json", mode: "0640"}}
    - ansible.builtin.template: {{src: "{{{{ d }}}}/unit.j2", dest: "{{{{ d }}}}/unit.conf", mode: "0644"}}
    - ansible.builtin.file: {{path: "{{{{ d }}}}/sub", state: directory, mode: "0750"}}
    - gpufleet.node.node_state:
        packages: [dpkg, gpufleet-no-such-package]
        files: ["{{{{ d }}}}/unit.conf", "{{{{ d }}}}/sub", "{{{{ d }}}}/absent"]
        read: ["{{{{ d }}}}/daemon.json"]
        apt_lists_dir: "{{{{ d }}}}"
      register: probe
    - gpufleet.node.node_state:
        files: ["{{{{ d }}}}/daemon.json"]
      register: probe2
    - ansible.builtin.copy:
        dest: "{{{{ d }}}}/out.json"
        mode: "0644"
        content: >-
          {{{{ {{
            'changed': probe.changed,
            'manager': probe.package_manager,
            'dpkg_installed': probe | gpufleet.node.node_state_installed(['dpkg', 'gpufleet-no-such-package']),
            'dpkg_ok': probe | gpufleet.node.node_state_packages_ok(['dpkg']),
            'unknown_ok': probe | gpufleet.node.node_state_packages_ok(['gpufleet-no-such-package']),
            'json_same': probe | gpufleet.node.node_state_file_ok(d ~ '/daemon.json', content=wanted, mode='0640'),
            'json_other_mode': probe | gpufleet.node.node_state_file_ok(d ~ '/daemon.json', content=wanted,
                                                                         mode='0644'),
            'json_one_byte_off': probe | gpufleet.node.node_state_file_ok(d ~ '/daemon.json', content=wanted ~ ' '),
            'json_content': probe | gpufleet.node.node_state_file_content(d ~ '/daemon.json'),
            'template_same': probe | gpufleet.node.node_state_file_ok(d ~ '/unit.conf',
                                 content=lookup('ansible.builtin.template', d ~ '/unit.j2'), mode='0644'),
            'dir_same': probe | gpufleet.node.node_state_file_ok(d ~ '/sub', state='directory', mode='0750'),
            'dir_owner_off': probe | gpufleet.node.node_state_file_ok(d ~ '/sub', state='directory', owner='nobody'),
            'absent': probe | gpufleet.node.node_state_file_ok(d ~ '/absent', state='absent'),
            'apt_lists': probe.apt_lists,
            'salt': probe.checksum_salt,
            'json_checksum': probe.files[d ~ '/daemon.json'].checksum,
            'salt2': probe2.checksum_salt,
            'json_checksum2': probe2.files[d ~ '/daemon.json'].checksum,
            'json_same2': probe2 | gpufleet.node.node_state_file_ok(d ~ '/daemon.json', content=wanted, mode='0640'),
            'json_sha1': wanted | ansible.builtin.hash('sha1'),
            'json_sha256': wanted | ansible.builtin.hash('sha256'),
          }} | to_json }}}}
"""

TEMPLATE = """[Service]
{% for key in ['HTTP_PROXY', 'NO_PROXY'] %}
Environment="{{ key }}=value-{{ loop.index }}"
{% endfor %}
# trailing comment
"""


def run(tmp_path, *extra):
    (tmp_path / "unit.j2").write_text(TEMPLATE)
    (tmp_path / "x_Packages").write_text("")
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(dir=tmp_path))
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", "-c", "local", str(play),
         "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env={**os.environ})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "out.json").read_text())


def test_files_written_by_ansible_match_and_drift_does_not(tmp_path):
    out = run(tmp_path)
    assert out["changed"] is False and out["manager"] == "dpkg"
    assert out["dpkg_installed"] == ["dpkg"]
    assert out["dpkg_ok"] is True and out["unknown_ok"] is False
    assert out["json_same"] is True
    assert out["json_other_mode"] is False and out["json_one_byte_off"] is False
    assert json.loads(out["json_content"]) == {"live-restore": True, "log-driver": "json-file"}
    # The template lookup renders what the template module writes: the roles' template guards can match.
    assert out["template_same"] is True
    assert out["dir_same"] is True and out["dir_owner_off"] is False
    assert out["absent"] is True
    assert out["apt_lists"] == 1
    # The result (printed at -v) holds only a salted checksum of each file.
    assert re.fullmatch("[0-9a-f]{32}", out["salt"])
    assert out["json_checksum"] not in (out["json_sha1"], out["json_sha256"])
    assert out["json_checksum"] == hashlib.sha256(bytes.fromhex(out["salt"]) + out["json_content"].encode()).hexdigest()
    # Every call draws its own salt: the same file's checksum differs between calls.
    assert out["salt2"] != out["salt"] and out["json_checksum2"] != out["json_checksum"]
    assert out["json_same2"] is True
