"""torch_gpu_facts run for real through Ansible on the controller: the probe travels inside the
module's payload and runs with the controller's CPU torch (requirements.txt), so the versions
are real and cuda_available is false. The in-image path runs in the Molecule workbench scenario.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="requirements.txt installs the CPU torch wheel")
ROOT = Path(__file__).resolve().parents[4]
ANSIBLE = Path(sys.executable).parent / "ansible"


def run_module(args, *extra, env=None):
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-i", "localhost,", "-m", "gpufleet.node.torch_gpu_facts",
         "-a", args, "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json", **(env or {})})
    return proc.returncode, json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_probe_with_the_controllers_torch_reports_real_versions():
    rc, result = run_module(json.dumps({"python": sys.executable}))
    assert rc == 0, result
    facts = result["ansible_facts"]["torch_gpu"]
    assert facts["torch"] == torch.__version__
    assert facts["cuda_available"] is False and facts["device_count"] == 0 and facts["devices"] == []
    assert facts["runner"] == "python"
    assert facts["checks"]["matmul_float32@cpu"]["passed"] is True
    assert facts["checks"]["matmul_bfloat16@cpu"]["value"] < facts["checks"]["matmul_bfloat16@cpu"]["bound"]
    assert 0 < facts["wall_time_s"] < 60
    assert result["changed"] is False


def fingerprints(result):
    dtypes = result["ansible_facts"]["torch_gpu"]["fingerprint"]["dtypes"]
    return {dtype: value["sha256"] for dtype, value in dtypes.items()}


def test_the_fingerprint_is_the_same_bits_run_after_run_and_changes_with_the_math():
    """Seeded, deterministic steps: the same bits twice; one CPU thread instead of several sums in
    another order, and the fingerprint says so (as another BLAS or GPU model would)."""
    first = run_module(json.dumps({"python": sys.executable}))[1]
    fingerprint = first["ansible_facts"]["torch_gpu"]["fingerprint"]
    assert fingerprint["kind"] == "cpu" and set(fingerprint["dtypes"]) == {"float32", "bfloat16"}, fingerprint
    for value in fingerprint["dtypes"].values():
        assert len(value["steps"]) == 3 and value["steps"][-1] == value["sha256"] and len(value["sha256"]) == 64
    assert fingerprints(run_module(json.dumps({"python": sys.executable}))[1]) == fingerprints(first)
    if (os.cpu_count() or 1) > 1:
        one_thread = run_module(json.dumps({"python": sys.executable}), env={"OMP_NUM_THREADS": "1"})[1]
        assert fingerprints(one_thread)["float32"] != fingerprints(first)["float32"]


def test_check_mode_reads_the_same_and_changes_nothing():
    rc, result = run_module(json.dumps({"python": sys.executable}), "--check")
    assert rc == 0 and result["changed"] is False
    assert result["ansible_facts"]["torch_gpu"]["torch"] == torch.__version__


def test_python_without_torch_fails_clearly(tmp_path):
    bare = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    rc, result = run_module(json.dumps({"python": str(bare / "bin" / "python")}))
    assert rc != 0
    assert "torch is not importable" in result["msg"]


def test_timeout_stops_the_probe():
    rc, result = run_module(json.dumps({"python": sys.executable, "timeout": 1}))
    assert rc != 0 and "did not finish within 1 s" in result["msg"]


def test_image_and_python_are_exclusive():
    rc, result = run_module(json.dumps({"python": sys.executable, "image": "x"}))
    assert rc != 0 and "mutually exclusive" in result["msg"]
