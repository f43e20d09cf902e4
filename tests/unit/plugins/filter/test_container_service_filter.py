"""The container_service filters as roles call them: bad input fails as a filter error naming it,
and through real Ansible the docker proxy drop-in is written as before and a `.applied` record of
the role's earlier versions is recognised (Ansible's own templating built that one)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.filter.container_service import FilterModule

FILTERS = FilterModule().filters()
ROOT = Path(__file__).resolve().parents[4]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def test_systemd_exec_refuses_a_newline_as_a_filter_error():
    with pytest.raises(AnsibleFilterError, match=re.escape(repr("x\nExecStartPost=/bin/sh"))):
        FILTERS["systemd_exec"](["/usr/bin/docker", "run", "x\nExecStartPost=/bin/sh"])


def test_systemd_environment_filter_errors_name_the_variable():
    with pytest.raises(AnsibleFilterError, match="HTTP_PROXY"):
        FILTERS["systemd_environment"]({"HTTP_PROXY": "http://p:3128\n[Service]"})
    with pytest.raises(AnsibleFilterError, match="environment variable name"):
        FILTERS["systemd_environment"]({"HTTP PROXY": "x"})
    assert FILTERS["systemd_environment"]({"A": "1"}) == 'Environment="A=1"'


def test_container_service_applied_filter():
    got = FILTERS["container_service_applied"](None, ("unit", "drv"))
    assert got["current"] is False
    assert FILTERS["container_service_applied"](got["record"], ["unit", "drv"]) == {**got, "current": True}
    with pytest.raises(AnsibleFilterError, match="parts must hold"):
        FILTERS["container_service_applied"]("", [])


PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    d: "{dir}"
    docker_http_proxy: http://proxy.example.internal:3128
    docker_https_proxy: http://proxy.example.internal:3128
    docker_no_proxy: localhost,127.0.0.1,.example.internal
    _docker_proxy_env: >-
      {{{{
        {{'HTTP_PROXY': docker_http_proxy, 'HTTPS_PROXY': docker_https_proxy, 'NO_PROXY': docker_no_proxy}}
        | dict2items | rejectattr('value', 'equalto', '') | items2dict
      }}}}
    container_service_files:
      - {{dest: /etc/gpufleet/jupyter/jupyter_server_config.py, content: "c.ServerApp.root_dir = '/workspace'\\n"}}
      - {{dest: /etc/gpufleet/jupyter/token, content: "6f1c0ffee-token\\n", secret: true}}
    __container_service_driver: "550.54.15"
    __container_service_unit_text: "[Unit]\\nDescription=jupyter\\n[Service]\\nExecStart=/usr/bin/docker run img\\n"
  tasks:
    - ansible.builtin.template:
        src: "{root}/roles/docker/templates/http-proxy.conf.j2"
        dest: "{{{{ d }}}}/http-proxy.conf"
        mode: "0644"
    # The expression service.yml used before the salted record, verbatim.
    - ansible.builtin.set_fact:
        __container_service_fingerprint: >-
          {{{{ (__container_service_unit_text
              ~ (container_service_files | map(attribute='content') | join('\\0'))
              ~ __container_service_driver) | ansible.builtin.hash('sha256') }}}}
    - ansible.builtin.copy:
        dest: "{{{{ d }}}}/out.json"
        mode: "0644"
        content: >-
          {{{{ {{
            'old': __container_service_fingerprint,
            'applied': __container_service_fingerprint | gpufleet.node.container_service_applied(
                [__container_service_unit_text] + (container_service_files | map(attribute='content') | list)
                + [__container_service_driver]),
            'other_driver': __container_service_fingerprint | gpufleet.node.container_service_applied(
                [__container_service_unit_text] + (container_service_files | map(attribute='content') | list)
                + ['560.35.03']),
          }} | to_json }}}}
"""


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("container_service")
    play = tmp / "play.yml"
    play.write_text(PLAY.format(dir=tmp, root=ROOT))
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", "-c", "local", str(play),
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env={**os.environ})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp


def test_proxy_drop_in_is_byte_identical_to_what_converged_nodes_have(played):
    # What the template's former `Environment="{{ name }}={{ value }}"` loop over dictsort wrote.
    assert (played / "http-proxy.conf").read_bytes() == (
        b"# Ansible managed\n"
        b"[Service]\n"
        b'Environment="HTTP_PROXY=http://proxy.example.internal:3128"\n'
        b'Environment="HTTPS_PROXY=http://proxy.example.internal:3128"\n'
        b'Environment="NO_PROXY=localhost,127.0.0.1,.example.internal"\n'
    )


def test_record_of_the_earlier_role_is_current_and_replaced(played):
    out = json.loads((played / "out.json").read_text())
    assert re.fullmatch("[0-9a-f]{64}", out["old"])
    assert out["applied"]["current"] is True  # no restart on upgrade
    assert re.fullmatch(r"v2 [0-9a-f]{32} [0-9a-f]{64}", out["applied"]["record"])
    assert out["old"] not in out["applied"]["record"]
    assert out["other_driver"]["current"] is False
