"""playbooks/lock.yml refuses a fingerprint reference that is not one GPU node, before it asks
the registry or writes the lock: a name matching no host would otherwise record nothing and
exit 0, and a group would have every node write the lock."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
