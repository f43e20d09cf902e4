"""The probe's output parsing, the comparison with the lock, and the report's renderings.

The GPU-shaped facts below are written for these tests (no GPU was at hand when they were):
they exercise the comparison rules, not any machine's performance.
"""

import json

import pytest
from ansible_collections.gpufleet.node.plugins.module_utils._torch_report import (
    build_report,
    compare,
    drift,
    failures_message,
    lock_problems,
    parse_probe_output,
    render_html,
    render_markdown,
    render_table,
    report_row,
    unverified_reason,
    unverified_row,
)

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
LOCK = {"image_digest": DIGEST, "driver_version": "580.95.05", "toolkit_version": "1.18.0-1",
        "torch": "2.9.1+cu128", "cuda": "12.8", "cudnn": "91002", "min_gpus": {"hgx": 8, "gpu_nodes": 1},
        "min_performance": 0.9, "reference": {"NVIDIA H100 80GB HBM3": {"bf16_tflops": 798, "copy_tbps": 3.0}}}


def gpu_facts(gpus=8, tflops=760.0, copy=2.9, torch="2.9.1+cu128"):
    devices = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{i}", "compute_capability": "9.0",
                "total_memory": 85029158912, "multiprocessors": 132} for i in range(gpus)]
    checks = {}
    for i in range(gpus):
        checks[f"matmul_bfloat16@cuda:{i}"] = {"passed": True, "value": 0.003, "bound": 0.02, "unit": "relative error"}
        checks[f"tflops_bf16@cuda:{i}"] = {"passed": True, "value": tflops, "unit": "TFLOP/s"}
        checks[f"copy_bandwidth@cuda:{i}"] = {"passed": True, "value": copy, "unit": "TB/s"}
    return {"torch": torch, "cuda": "12.8", "cudnn": "91002", "nccl": "2.27.3", "cuda_available": True,
            "device_count": gpus, "driver_version": "580.95.05", "devices": devices, "checks": checks,
            "errors": [], "wall_time_s": 12.5}


def observed(digest=DIGEST, toolkit="1.18.0-1"):
    image = {"id": "sha256:" + "c" * 64, "digests": [f"reg.example/pytorch/pytorch@{digest}"]}
    return {"driver_version": "580.95.05", "toolkit_version": toolkit,
            "images": {"gpufleet-jupyter": image, "gpufleet-ssh": image, "probe": image}}


def failed(findings):
    return {f["check"]: (f["expected"], f["measured"]) for f in findings if not f["passed"]}


def test_parse_takes_the_last_json_line():
    facts = parse_probe_output(0, 'warning: noise\n{"torch": "2.13.0+cpu", "errors": []}\n', "")
    assert facts["torch"] == "2.13.0+cpu"


@pytest.mark.parametrize(("stdout", "stderr", "message"), [
    ("", 'exec: "python3": executable file not found in $PATH', "has no python3"),
    ("", "Unable to find image", "printed no result"),
    ('{"errors": ["import torch failed: ModuleNotFoundError"]}', "", "torch is not importable"),
    ("{not json", "", "not JSON"),
])
def test_parse_failures_say_why(stdout, stderr, message):
    with pytest.raises(ValueError, match=message):
        parse_probe_output(127, stdout, stderr)


def test_a_node_that_matches_the_lock_passes_every_check():
    findings = compare(gpu_facts(), observed(), LOCK, require_gpu=True, groups=["gpu_nodes", "hgx"])
    assert failed(findings) == {}
    checks = {f["check"] for f in findings}
    assert {"image (gpufleet-jupyter)", "cuda_available", "gpus", "driver", "toolkit", "torch", "cuda", "cudnn",
            "tflops_bf16@cuda:7", "copy_bandwidth@cuda:0", "matmul_bfloat16@cuda:3"} <= checks


def test_drifted_image_slow_gpu_and_missing_gpus_are_named():
    facts = gpu_facts(gpus=7, tflops=700.0)
    findings = compare(facts, observed(digest=OTHER), LOCK, require_gpu=True, groups=["gpu_nodes", "hgx"])
    bad = failed(findings)
    assert bad["image (gpufleet-jupyter)"] == (DIGEST, OTHER)
    assert bad["gpus"] == (">= 8", 7)
    assert bad["tflops_bf16@cuda:0"] == (">= 718.2 TFLOP/s", 700.0)   # 90% of 798
    message = failures_message("gpu17", findings)
    assert "gpu17: gpus: expected >= 8, measured 7" in message
    assert f"gpu17: image (gpufleet-ssh): expected {DIGEST}, measured {OTHER}" in message


def test_no_gpu_fails_only_when_required():
    cpu = {"torch": "2.9.1+cu128", "cuda": "12.8", "cudnn": "91002", "cuda_available": False, "device_count": 0,
           "devices": [], "checks": {"matmul_float32@cpu": {"passed": True, "value": 1e-7, "bound": 2e-3}},
           "errors": [], "driver_version": ""}
    lab = {**observed(), "driver_version": "", "toolkit_version": ""}
    assert failed(compare(cpu, lab, LOCK, require_gpu=False, groups=["gpu_nodes"])) == {}
    bad = failed(compare(cpu, lab, LOCK, require_gpu=True, groups=["gpu_nodes"]))
    assert bad["cuda_available"] == (True, False)
    assert bad["gpus"] == (">= 1", 0)
    assert bad["driver"] == ("580.95.05", "none")


def test_archive_nodes_match_by_image_id():
    image = {"id": "sha256:" + "d" * 64, "digests": []}
    lock = {"image_digest": DIGEST, "image_id": image["id"]}
    assert failed(compare(gpu_facts(1), {"images": {"probe": image}}, lock, True, [])) == {}


def test_check_errors_are_failures_not_crashes():
    facts = gpu_facts(1)
    facts["checks"]["nccl_all_reduce"] = {"passed": False, "error": "RuntimeError: NCCL error"}
    bad = failed(compare(facts, observed(), {}, True, []))
    assert bad["nccl_all_reduce"] == ("no error", "RuntimeError: NCCL error")


def report():
    good = compare(gpu_facts(), observed(), LOCK, True, ["hgx"])
    drifted = compare(gpu_facts(torch="2.9.0+cu128"), observed(digest=OTHER), LOCK, True, ["hgx"])
    rows = [report_row("node-b", gpu_facts(torch="2.9.0+cu128"), observed(digest=OTHER), drifted),
            report_row("node-a", gpu_facts(), observed(), good),
            report_row("node-c", gpu_facts(), observed(), good)]
    return build_report(rows, LOCK, "2026-11-22T12:00:00Z")


def test_report_summarises_and_finds_drift():
    data = report()
    assert [r["host"] for r in data["hosts"]] == ["node-a", "node-b", "node-c"]
    assert data["summary"] == {"hosts": 3, "passed": 2, "failed": ["node-b"]}
    assert data["drift"] == {"image": ["node-b"], "torch": ["node-b"]}
    assert data["hosts"][0]["tflops_bf16"] == 760.0
    json.dumps(data)   # the JSON report is plain data


def test_markdown_and_table_show_failures_and_drift():
    data = report()
    markdown = render_markdown(data)
    assert "2 of 3 hosts pass." in markdown
    assert "| node-b (drift: image, torch) |" in markdown
    assert "- node-b: torch: expected 2.9.1+cu128, measured 2.9.0+cu128" in markdown
    table = render_table(data)
    assert table[0].split() == ["host", "GPUs", "driver", "image", "torch", "bf16", "checks"]
    assert "FAIL" in table[2] and table[1].endswith("pass")


def test_html_is_one_self_contained_escaped_page():
    data = report()
    data["hosts"][0]["host"] = "<script>alert(1)</script>"
    page = render_html(data)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page   # nothing fetched from elsewhere
    assert page.count('<tr class="failed">') == 1 and page.count('class="drift"') == 2


def test_drift_is_measured_against_the_lock_first():
    # Two hosts, one of them off the lock: the lock decides, not a 1:1 "majority".
    rows = [report_row("a", gpu_facts(), observed(), []), report_row("b", gpu_facts(), observed(digest=OTHER), [])]
    assert drift(rows, LOCK) == {"image": ["b"]}
    # Without a lock a tie names nobody, a majority names the odd one out.
    assert drift(rows, {}) == {}
    rows.append(report_row("c", gpu_facts(), observed(), []))
    assert drift(rows, {}) == {"image": ["b"]}


def test_archive_hosts_are_not_drift_when_their_image_id_is_locked():
    archive = {**observed(), "images": {"probe": {"id": "sha256:" + "d" * 64, "digests": []}}}
    rows = [report_row("a", gpu_facts(), observed(), []), report_row("air", gpu_facts(), archive, [])]
    assert drift(rows, {**LOCK, "image_id": "sha256:" + "d" * 64}) == {}


def test_nodes_the_run_did_not_verify_are_listed_with_why_and_never_drift():
    rows = [report_row("node-a", gpu_facts(), observed(), compare(gpu_facts(), observed(), LOCK, groups=["hgx"]))]
    reasons = {
        "node-b": unverified_reason({"fleet_run_failed_stage": "docker",
                                     "fleet_run_failed_message": "Start docker: boom"}, True),
        "node-c": unverified_reason({"fleet_run_not_reached": "the run stopped after node-b failed"}, True),
        "node-d": unverified_reason({}, False),
    }
    assert reasons["node-b"] == "failed in the docker stage: Start docker: boom"
    assert reasons["node-c"] == "not reached: the run stopped after node-b failed"
    assert reasons["node-d"] == "unreachable, or failed before the verification"
    assert unverified_reason({}, True) is None   # simply not probed (--check before the image is there)
    data = build_report(rows + [unverified_row(h, r) for h, r in reasons.items()], LOCK, "now")
    assert data["summary"] == {"hosts": 4, "passed": 1, "failed": ["node-b", "node-c", "node-d"]}
    assert data["drift"] == {}   # three empty rows are no majority the measured node drifts from
    markdown = render_markdown(data)
    assert "| node-b | - |" in markdown and "not verified" in markdown
    assert "- node-c: run: expected converged and verified, measured not reached: the run stopped" in markdown
    assert render_table(data)[3].endswith("not verified")


@pytest.mark.parametrize(("lock", "pins", "problems"), [
    (LOCK, {"image_digest": DIGEST, "driver_version": "580.95.05-1", "toolkit_version": "1.18.0-1"}, []),
    (LOCK, {}, []),   # pins the inventory leaves empty follow the lock
    (LOCK, {"driver_version": "3:580.95.05-1.el9"}, []),   # epoch and release are the package's, not the driver's
    (LOCK, {"image_digest": OTHER}, [f"pytorch_image_digest is {OTHER}, the lock's image_digest is {DIGEST}"]),
    (LOCK, {"driver_version": "580.82.07-1", "toolkit_version": "1.17.8-1"},
     ["nvidia_driver_version is 580.82.07, the lock's driver_version is 580.95.05",
      "nvidia_container_toolkit_version is 1.17.8-1, the lock's toolkit_version is 1.18.0-1"]),
    ({}, {"image_digest": DIGEST},
     ["gpu_verify_lock has no image_digest or image_id: write it with playbooks/lock.yml"]),
    ({"image_digest": "sha256:" + "0" * 64}, {}, ["gpu_verify_lock is still the example's placeholder "
                                                  "(image_digest sha256:000...): write it with playbooks/lock.yml"]),
])
def test_onboarding_refuses_pins_that_differ_from_the_lock(lock, pins, problems):
    assert lock_problems(lock, pins) == problems


CDI_SPEC = ("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  mounts:\n"
            "  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05\n")


@pytest.mark.parametrize(("handover", "failures"), [
    ({"runtimes": ["io.containerd.runc.v2", "nvidia", "runc"]}, {}),
    ({"runtimes": ["io.containerd.runc.v2", "runc"]},
     {"gpu hand-over (nvidia runtime)": ("registered with dockerd",
                                         "missing (dockerd offers: io.containerd.runc.v2, runc)")}),
    ({"cdi_spec_path": "/etc/cdi/nvidia.yaml", "cdi_spec": CDI_SPEC}, {}),
    ({"cdi_spec_path": "/etc/cdi/nvidia.yaml", "cdi_spec": ""},
     {"gpu hand-over (CDI specification)": ("/etc/cdi/nvidia.yaml for driver 580.95.05", "missing")}),
    ({"cdi_spec_path": "/etc/cdi/nvidia.yaml", "cdi_spec": CDI_SPEC.replace("580.95.05", "570.172.08")},
     {"gpu hand-over (CDI specification)": ("/etc/cdi/nvidia.yaml for driver 580.95.05",
                                            "written for another driver")}),
    ({"runtimes": None, "cdi_spec": None}, {}),      # not read: nothing to say
])
def test_a_broken_gpu_handover_is_drift(handover, failures):
    findings = compare(gpu_facts(), {**observed(), "gpu_handover": handover}, LOCK, groups=["hgx"])
    assert failed(findings) == failures
    assert any(f["check"].startswith("gpu hand-over") for f in findings) == (handover != {"runtimes": None,
                                                                                          "cdi_spec": None})


NODES8 = [f"/dev/nvidia{i}" for i in range(8)]


@pytest.mark.parametrize(("nodes", "requested", "failures"), [
    (NODES8, ["all"], {}),
    (NODES8[2:4], ["2", "3"], {}),
    (["/dev/nvidia0"], ["MIG-1f6d3b52-7c1e-5d2e-9f4c-2f0b6d1a8e31", "MIG-2a7c"], {}),
    # the runtime or the CDI spec handed nothing over: the container has no device node
    ([], ["all"], {"gpu hand-over (probe container)": ("8 GPU device node(s)", "0 (none)")}),
    (NODES8[:1], ["0", "1"], {"gpu hand-over (probe container)": ("2 GPU device node(s)", "1 (/dev/nvidia0)")}),
    ([], ["MIG-2a7c"], {"gpu hand-over (probe container)": ("at least 1 GPU device node", "0 (none)")}),
])
def test_the_probe_container_must_get_the_gpus_it_was_given(nodes, requested, failures):
    findings = compare({**gpu_facts(), "device_nodes": nodes},
                       {**observed(), "probe_gpus": requested, "gpu_count": 8}, LOCK, groups=["hgx"])
    assert failed(findings) == failures
    assert [f["check"] for f in findings].count("gpu hand-over (probe container)") == 1


@pytest.mark.parametrize(("facts", "requested"), [
    ({"device_nodes": []}, []),            # given no GPU (gpus: none, or a host without GPUs)
    ({}, ["all"]),                         # a probe older than version 2 reports no device nodes
])
def test_no_device_node_check_without_gpus_asked_for_or_reported(facts, requested):
    findings = compare({**gpu_facts(), **facts}, {**observed(), "probe_gpus": requested, "gpu_count": 8},
                       LOCK, groups=["hgx"])
    assert "gpu hand-over (probe container)" not in [f["check"] for f in findings]


def fp(sha, steps=None, kind="cuda", model="NVIDIA H100 80GB HBM3"):
    """A probe's fingerprint: both dtypes with the same final hash unless given per dtype."""
    shas = sha if isinstance(sha, dict) else {"float32": sha, "bfloat16": sha}
    return {"kind": kind, "model": model, "dtypes": {
        dtype: ({"sha256": value, "steps": steps or ["s1", "s2", value]} if not value.startswith("error")
                else {"passed": False, "error": value})
        for dtype, value in shas.items()}}


def fleet_row(host, fingerprint, digest=DIGEST, lock=None):
    lock = LOCK if lock is None else lock
    facts = {**gpu_facts(), "fingerprint": fingerprint}
    obs = observed(digest)
    return report_row(host, facts, obs, compare(facts, obs, lock, groups=["hgx"]))


def test_the_node_that_computes_other_bits_is_named_with_the_step():
    rows = [fleet_row("a", fp("f" * 64)), fleet_row("b", fp("f" * 64)),
            fleet_row("c", fp({"float32": "e" * 64, "bfloat16": "f" * 64}, steps=["s1", "x2", "e" * 64]))]
    report = build_report(rows, LOCK, "now")
    (group,) = report["fingerprints"]
    assert group["hosts"] == ["a", "b", "c"]
    assert group["reference"]["float32"] == {"sha256": "f" * 64, "from": "2 of 3 nodes"}
    assert group["differs"] == [{"host": "c", "dtype": "float32", "measured": "e" * 64, "first_step": 2}]
    assert report["drift"]["fingerprint"] == ["c"]
    markdown = render_markdown(report)
    assert "## Numerical fingerprint" in markdown
    assert "  - c: float32 differs (eeeeeeeeeeeeeeee, from step 2)" in markdown
    assert "Numerical fingerprint" in render_html(report)
    assert all(row["passed"] for row in rows)   # without a locked fingerprint a majority names, it does not fail


def test_other_models_images_or_drivers_are_other_groups_and_a_tie_names_nobody():
    rows = [fleet_row("a", fp("f" * 64)), fleet_row("b", fp("e" * 64, model="NVIDIA H200")),
            fleet_row("c", fp("d" * 64), digest=OTHER),
            fleet_row("d", fp("1" * 64, kind="cpu", model="AMD EPYC")),
            fleet_row("e", fp("2" * 64, kind="cpu", model="AMD EPYC"))]
    report = build_report(rows, LOCK, "now")
    assert [len(g["hosts"]) for g in report["fingerprints"]] == [2, 1, 1, 1]
    assert [g["differs"] for g in report["fingerprints"]] == [[], [], [], []]
    cpu = next(g for g in report["fingerprints"] if g["group"].startswith("cpu AMD EPYC"))
    assert cpu["reference"]["float32"] == {"sha256": None, "from": "no majority"}
    assert "fingerprint" not in report["drift"]


def test_a_locked_fingerprint_fails_the_node_that_differs_and_is_the_reference():
    lock = {**LOCK, "fingerprints": {"cuda NVIDIA H100 80GB HBM3": {"float32": "a" * 64}}}
    rows = [fleet_row(h, fp("f" * 64), lock=lock) for h in ("a", "b")] + [fleet_row("c", fp("a" * 64), lock=lock)]
    assert [row["passed"] for row in rows] == [False, False, True]
    assert failed(rows[0]["findings"]) == {"fingerprint (float32)": ("a" * 64, "f" * 64)}
    (group,) = build_report(rows, lock, "now")["fingerprints"]
    assert group["reference"]["float32"] == {"sha256": "a" * 64, "from": "lock"}
    assert [d["host"] for d in group["differs"] if d["dtype"] == "float32"] == ["a", "b"]


def test_a_fingerprint_that_could_not_be_computed_is_reported_not_hidden():
    lock = {**LOCK, "fingerprints": {"cuda NVIDIA H100 80GB HBM3": {"bfloat16": "f" * 64}}}
    broken = fp({"float32": "f" * 64, "bfloat16": "error RuntimeError: no deterministic kernel"})
    row = fleet_row("c", broken, lock=lock)
    assert failed(row["findings"]) == {
        "fingerprint (bfloat16)": ("f" * 64, "error: error RuntimeError: no deterministic kernel")}
    rows = [fleet_row("a", fp("f" * 64)), fleet_row("b", fp("f" * 64)), fleet_row("c", broken)]
    (group,) = build_report(rows, LOCK, "now")["fingerprints"]
    assert group["differs"] == [{"host": "c", "dtype": "bfloat16", "first_step": None,
                                 "measured": "error RuntimeError: no deterministic kernel"}]


@pytest.mark.parametrize(("fingerprints", "problem"), [
    ({"cuda NVIDIA H100 80GB HBM3": {"float32": "a" * 64, "bfloat16": "b" * 64}}, None),
    ({"gpu H100": {"float32": "a" * 64}}, "must be named 'cpu <model>' or 'cuda <model>'"),
    ({"cuda NVIDIA H100 80GB HBM3": {"float16": "a" * 64}}, "must be a float32 or bfloat16 SHA-256"),
    ({"cuda NVIDIA H100 80GB HBM3": {"float32": "A1B2"}}, "must be a float32 or bfloat16 SHA-256"),
    (["a" * 64], "must map '<kind> <model>' to dtypes"),
])
def test_a_malformed_locked_fingerprint_is_refused_naming_it(fingerprints, problem):
    problems = lock_problems({**LOCK, "fingerprints": fingerprints}, {})
    assert (problems == []) if problem is None else (problem in problems[0] and len(problems) == 1), problems
