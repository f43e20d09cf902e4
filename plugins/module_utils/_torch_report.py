# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""The probe's output, the comparison of a host with the lock, and the fleet report.

Pure functions: the module torch_gpu_facts parses with them, the role gpu_verify compares
with them, and playbooks/verify.yml renders the report (JSON, Markdown, one HTML page).
"""

from __future__ import annotations

import html
import json

PERFORMANCE_CHECKS = {"tflops_bf16": "bf16_tflops", "tflops_fp16": "fp16_tflops", "copy_bandwidth": "copy_tbps"}


def parse_probe_output(rc: int, stdout: str, stderr: str) -> dict:
    """The probe's JSON result; ValueError with the reason when there is none or torch is missing."""
    lines = [line for line in (stdout or "").splitlines() if line.startswith("{")]
    if not lines:
        tail = (stderr or stdout or "").strip()[-600:]
        if "python3" in tail and ("not found" in tail or "no such file" in tail.lower()):
            raise ValueError(f"the image has no python3 to run the torch probe (rc={rc}): {tail}")
        raise ValueError(f"the torch probe printed no result (rc={rc}): {tail or 'no output'}")
    try:
        facts = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the torch probe printed something that is not JSON: {exc}") from exc
    missing = [e for e in facts.get("errors", []) if e.startswith("import torch failed")]
    if missing:
        raise ValueError(f"torch is not importable by that Python: {missing[0]}")
    return facts


def _finding(check, expected, measured, passed, note=""):
    return {"check": check, "expected": expected, "measured": measured, "passed": bool(passed), "note": note}


def _built_from(image: dict) -> str:
    """The pinned base digest of a workbench image built FROM it (its layers checked), else ''."""
    base = image.get("base", "")
    return base.split("@", 1)[1] if image.get("from_base") and "@" in base else ""


def image_matches(image: dict, lock: dict) -> bool:
    """An image (Id, RepoDigests) is the lock's when a repo digest or the archive's image ID matches,
    or when it was built FROM the locked digest (pytorch_image_source `build`)."""
    digest = lock.get("image_digest", "")
    if digest and any(ref.endswith("@" + digest) for ref in image.get("digests", [])):
        return True
    if digest and _built_from(image) == digest:
        return True
    return bool(lock.get("image_id")) and image.get("id") == lock.get("image_id")


def _image_label(image: dict) -> str:
    """What the report shows: the registry digest, the base digest of a workbench image built FROM
    the pin (its own digest is the site's build, not the pin), or the image ID."""
    if _built_from(image):
        return _built_from(image)
    digests = image.get("digests") or []
    return digests[0].split("@", 1)[1] if digests else image.get("id", "absent") or "absent"


def compare(facts: dict, observed: dict, lock: dict, require_gpu: bool = True, groups=()) -> list:
    """Every check of one host against the lock: what was expected, what was measured, passed or not."""
    findings = []
    want_image = lock.get("image_digest") or lock.get("image_id") or ""
    for name, image in sorted(observed.get("images", {}).items()):
        note = f"built FROM it as {image.get('id', '')[:19]}" if _built_from(image) else ""
        findings.append(_finding(f"image ({name})", want_image, _image_label(image), image_matches(image, lock), note))

    gpus = facts.get("device_count", 0)
    if require_gpu:
        findings.append(_finding("cuda_available", True, facts.get("cuda_available", False),
                                 facts.get("cuda_available", False)))
    wanted = max([int(n) for g, n in (lock.get("min_gpus") or {}).items() if g in groups] or [0])
    if wanted and (require_gpu or gpus):
        findings.append(_finding("gpus", f">= {wanted}", gpus, gpus >= wanted))

    driver = observed.get("driver_version") or facts.get("driver_version") or ""
    if lock.get("driver_version") and (require_gpu or driver):
        findings.append(_finding("driver", lock["driver_version"], driver or "none", driver == lock["driver_version"]))
    toolkit = observed.get("toolkit_version") or ""
    if lock.get("toolkit_version") and (require_gpu or toolkit):
        want = lock["toolkit_version"]
        findings.append(_finding("toolkit", want, toolkit or "none", toolkit == want))
    for key in ("torch", "cuda", "cudnn"):
        if lock.get(key):
            findings.append(_finding(key, lock[key], facts.get(key, ""), str(facts.get(key, "")) == str(lock[key])))

    findings += handover_findings(observed.get("gpu_handover") or {}, driver)
    findings += probe_devices_findings(facts, observed.get("probe_gpus") or [], int(observed.get("gpu_count") or 0))
    findings += _probe_findings(facts, lock)
    for error in facts.get("errors", []):
        findings.append(_finding("probe", "no error", error, False))
    return findings


def handover_findings(handover: dict, driver: str) -> list:
    """How the services get their GPUs, as the node has it now (drift a later start would meet).

    ``runtimes``: the runtimes the running dockerd offers (None when not read: CDI, or no runtime
    registered by the toolkit role). ``cdi_spec``: the CDI specification's text ("" when missing,
    None when not read: another hand-over, or no loaded driver to write it for).
    """
    findings = []
    runtimes = handover.get("runtimes")
    if runtimes is not None:
        ok = "nvidia" in runtimes
        offered = ", ".join(sorted(runtimes)) or "none"
        findings.append(_finding("gpu hand-over (nvidia runtime)", "registered with dockerd",
                                 "registered" if ok else f"missing (dockerd offers: {offered})", ok))
    spec = handover.get("cdi_spec")
    if spec is not None:
        fresh = bool(driver) and driver in spec
        measured = "missing" if spec == "" else (f"for driver {driver}" if fresh else "written for another driver")
        findings.append(_finding("gpu hand-over (CDI specification)",
                                 f"{handover.get('cdi_spec_path', 'the CDI specification')} for driver {driver or '?'}",
                                 measured, fresh))
    return findings


def probe_devices_findings(facts: dict, requested: list, gpu_count: int) -> list:
    """Whether the probe's container got the GPU device nodes it was given: the hand-over itself,
    which a broken driver or CUDA stack leaves working and a broken runtime or CDI spec does not.

    ``requested``: the probe's devices as container_service_gpus resolved them (["all"], indexes,
    UUIDs); empty when the probe was given no GPU. Probes before version 2 report no device nodes.
    """
    if not requested or "device_nodes" not in facts:
        return []
    nodes = [str(node) for node in facts.get("device_nodes") or []]
    # a MIG device's node is its parent GPU's, which several MIG devices share
    mig = any(str(device).startswith("MIG-") for device in requested)
    want = gpu_count if "all" in requested else len(requested)
    passed = bool(nodes) if mig else len(nodes) == want
    expected = "at least 1 GPU device node" if mig else f"{want} GPU device node(s)"
    return [_finding("gpu hand-over (probe container)", expected,
                     f"{len(nodes)} ({', '.join(nodes) or 'none'})", passed)]


def _probe_findings(facts: dict, lock: dict) -> list:
    """The probe's checks; performance against the lock's floor for the GPU's model."""
    findings = []
    names = {f"cuda:{d['index']}": d["name"] for d in facts.get("devices", [])}
    fraction = float(lock.get("min_performance", 0) or 0)
    for name, check in sorted(facts.get("checks", {}).items()):
        kind, _, device = name.partition("@")
        if "error" in check:
            findings.append(_finding(name, "no error", check["error"], False))
            continue
        reference = (lock.get("reference") or {}).get(names.get(device, ""), {}).get(PERFORMANCE_CHECKS.get(kind, ""))
        if reference and fraction:
            floor = round(fraction * float(reference), 3)
            findings.append(_finding(name, f">= {floor} {check.get('unit', '')}".strip(), round(check["value"], 3),
                                     check["value"] >= floor, f"{fraction:.0%} of {reference}"))
        elif "bound" in check:
            findings.append(_finding(name, f"<= {check['bound']}", check["value"], check["passed"]))
        elif kind not in PERFORMANCE_CHECKS:
            findings.append(_finding(name, True, check.get("value"), check["passed"]))
    return findings


def failures_message(host: str, findings: list) -> str:
    """One line per failed check: host, check, expected, measured."""
    return "; ".join(f"{host}: {f['check']}: expected {f['expected']}, measured {f['measured']}"
                     for f in findings if not f["passed"])


def report_row(host: str, facts: dict, observed: dict, findings: list) -> dict:
    """A host's row of the fleet report."""
    checks = facts.get("checks", {})

    def best(prefix):
        values = [c["value"] for n, c in checks.items() if n.startswith(prefix) and "value" in c]
        return round(min(values), 1) if values else None

    images = observed.get("images", {})
    return {
        "host": host,
        "gpus": facts.get("device_count", 0),
        "gpu_models": sorted({d["name"] for d in facts.get("devices", [])}),
        "driver": observed.get("driver_version") or facts.get("driver_version") or "",
        "toolkit": observed.get("toolkit_version") or "",
        "image": sorted({_image_label(i) for i in images.values()}) or [],
        "torch": facts.get("torch", ""),
        "cuda": facts.get("cuda", ""),
        "cudnn": facts.get("cudnn", ""),
        "cuda_available": facts.get("cuda_available", False),
        "tflops_bf16": best("tflops_bf16"),
        "copy_tbps": best("copy_bandwidth"),
        "probe_s": facts.get("wall_time_s"),
        "passed": all(f["passed"] for f in findings),
        "failed": [f for f in findings if not f["passed"]],
        "findings": findings,
    }


PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


def lock_problems(lock: dict, pins: dict) -> list:
    """Why the inventory's pins cannot bring a node to the state the lock records: a missing or
    placeholder lock, or a pin that differs from it. Pins the inventory leaves empty follow the
    lock's and are not compared."""
    lock = lock or {}
    if not lock.get("image_digest") and not lock.get("image_id"):
        return ["gpu_verify_lock has no image_digest or image_id: write it with playbooks/lock.yml"]
    if lock.get("image_digest") == PLACEHOLDER_DIGEST:
        return ["gpu_verify_lock is still the example's placeholder (image_digest sha256:000...): "
                "write it with playbooks/lock.yml"]
    problems = []

    def differ(pin, value, key, wanted):
        if value and wanted and str(value) != str(wanted):
            problems.append(f"{pin} is {value}, the lock's {key} is {wanted}")

    differ("pytorch_image_digest", pins.get("image_digest"), "image_digest", lock.get("image_digest"))
    differ("pytorch_image_repository", pins.get("image_repository"), "image_repository", lock.get("image_repository"))
    differ("pytorch_image_id", pins.get("image_id"), "image_id", lock.get("image_id"))
    driver = str(pins.get("driver_version") or "").split(":")[-1].split("-")[0]   # 3:580.95.05-1.el9
    differ("nvidia_driver_version", driver, "driver_version", lock.get("driver_version"))
    differ("nvidia_container_toolkit_version", pins.get("toolkit_version"), "toolkit_version",
           lock.get("toolkit_version"))
    return problems


def unverified_row(host: str, reason: str) -> dict:
    """A row for a node the run did not verify (an earlier stage failed, or no batch reached it)."""
    return {"host": host, "gpus": None, "gpu_models": [], "driver": "", "toolkit": "", "image": [], "torch": "",
            "cuda": "", "cudnn": "", "cuda_available": False, "tflops_bf16": None, "copy_tbps": None,
            "probe_s": None, "passed": False, "unverified": reason,
            "failed": [_finding("run", "converged and verified", reason, False)], "findings": []}


def unverified_reason(node_vars, active: bool):
    """Why a node has no verification result, from the facts the site run left on it; None
    where it simply was not probed (--check before the image is there)."""
    if node_vars.get("fleet_run_failed_stage") is not None:
        stage, message = node_vars["fleet_run_failed_stage"], node_vars.get("fleet_run_failed_message", "")
        return f"failed in the {stage} stage: {message}".strip()
    if node_vars.get("fleet_run_not_reached") is not None:
        return f"not reached: {node_vars['fleet_run_not_reached']}"
    if not active:
        return "unreachable, or failed before the verification"
    return None


LOCKED_COLUMNS = {"driver": "driver_version", "toolkit": "toolkit_version", "torch": "torch", "cuda": "cuda",
                  "cudnn": "cudnn"}


def _drifted_from_lock(row: dict, column: str, lock: dict):
    """True/False where the lock says what the column must be; None where it does not."""
    if column == "image":
        wanted = {v.split("@")[-1] for v in (lock.get("image_digest"), lock.get("image_id")) if v}
        return bool(wanted) and any(label not in wanted for label in row["image"]) if wanted else None
    key = LOCKED_COLUMNS.get(column)
    if not key or not lock.get(key) or row[column] in ("", None):
        return None
    return str(row[column]) != str(lock[key])


def drift(rows: list, lock: dict | None = None) -> dict:
    """For each column, the hosts that differ from the lock or, where the lock is silent, from
    what most hosts have (a tie names nobody: there is no majority to drift from)."""
    lock = lock or {}
    rows = [r for r in rows if not r.get("unverified")]   # nothing measured: neither drifted nor a majority
    out = {}
    for column in ("driver", "toolkit", "image", "torch", "cuda", "cudnn", "gpu_models"):
        verdicts = {r["host"]: _drifted_from_lock(r, column, lock) for r in rows}
        hosts = sorted(h for h, v in verdicts.items() if v)
        unlocked = [r for r in rows if verdicts[r["host"]] is None]
        values = [json.dumps(r[column], sort_keys=True) for r in unlocked]
        if len(set(values)) > 1:
            counts = sorted((values.count(v) for v in set(values)), reverse=True)
            if counts[0] > counts[1]:
                common = max(set(values), key=values.count)
                hosts += [r["host"] for r, v in zip(unlocked, values, strict=True) if v != common]
        if hosts:
            out[column] = sorted(hosts)
    return out


def build_report(rows: list, lock: dict, generated: str) -> dict:
    rows = sorted(rows, key=lambda r: r["host"])
    return {"generated": generated, "lock": lock, "hosts": rows, "drift": drift(rows, lock),
            "summary": {"hosts": len(rows), "passed": sum(r["passed"] for r in rows),
                        "failed": sorted(r["host"] for r in rows if not r["passed"])}}


def _cell(value):
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v)[:19] for v in value) or "-"
    return str(value)


COLUMNS = [("host", "host"), ("gpus", "GPUs"), ("gpu_models", "model"), ("driver", "driver"), ("toolkit", "toolkit"),
           ("image", "image"), ("torch", "torch"), ("cuda", "CUDA"), ("tflops_bf16", "bf16 TFLOP/s"),
           ("copy_tbps", "copy TB/s"), ("passed", "checks")]


def _status(row):
    if row.get("unverified"):
        return "not verified"
    return "pass" if row["passed"] else f"FAIL ({len(row['failed'])})"


def render_markdown(report: dict) -> str:
    lines = [f"# Fleet report ({report['generated']})", "",
             f"{report['summary']['passed']} of {report['summary']['hosts']} hosts pass.", "",
             "| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report["hosts"]:
        cells = [_status(row) if key == "passed" else _cell(row[key]) for key, _ in COLUMNS]
        drifted = [c for c, hosts in report["drift"].items() if row["host"] in hosts]
        cells[0] = row["host"] + (f" (drift: {', '.join(drifted)})" if drifted else "")
        lines.append("| " + " | ".join(cells) + " |")
    failures = [(row["host"], f) for row in report["hosts"] for f in row["failed"]]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {host}: {f['check']}: expected {f['expected']}, measured {f['measured']}" for host, f in failures]
    if report["drift"]:
        lines += ["", "## Drift", ""]
        lines += [f"- {column}: {', '.join(hosts)}" for column, hosts in sorted(report["drift"].items())]
    return "\n".join(lines) + "\n"


def render_table(report: dict) -> list:
    """A compact fixed-width table for the end of a run, one line per host."""
    keys = [("host", "host"), ("gpus", "GPUs"), ("driver", "driver"), ("image", "image"), ("torch", "torch"),
            ("tflops_bf16", "bf16"), ("passed", "checks")]
    rows = [[title for _, title in keys]]
    for row in report["hosts"]:
        rows.append([_status(row) if key == "passed" else _cell(row[key]) for key, _ in keys])
    widths = [max(len(r[i]) for r in rows) for i in range(len(keys))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]


_CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#1d2430}h1{font-size:20px}
table{border-collapse:collapse;width:100%;table-layout:auto}th,td{border:1px solid #d0d7de;padding:6px 8px;
text-align:left;vertical-align:top}th{background:#f3f5f7;white-space:nowrap}
td.checks{overflow-wrap:anywhere}tr.failed td{background:#fde8e8}
tr td.drift{background:#ffe9a8;font-weight:600}span.pass{color:#137333;font-weight:600}
span.fail-label{color:#b3261e;font-weight:600}.summary{margin:8px 0 16px}ul{margin:4px 0;padding-left:18px}
small{color:#57606a}"""


def render_html(report: dict) -> str:
    """One self-contained page: no scripts, no external files."""
    esc = html.escape
    head = "".join(f"<th>{esc(title)}</th>" for _, title in COLUMNS)
    body = []
    for row in report["hosts"]:
        drifted = {c for c, hosts in report["drift"].items() if row["host"] in hosts}
        cells = []
        for key, _ in COLUMNS:
            if key == "passed":
                if row["passed"]:
                    cells.append('<td class="checks"><span class="pass">pass</span></td>')
                else:
                    items = "".join(f"<li>{esc(f['check'])}: expected {esc(str(f['expected']))}, "
                                    f"measured {esc(str(f['measured']))}</li>" for f in row["failed"])
                    cells.append(f'<td class="checks"><span class="fail-label">{esc(_status(row))}</span>'
                                 f"<ul>{items}</ul></td>")
                continue
            klass = ' class="drift"' if key in drifted else ""
            cells.append(f"<td{klass}>{esc(_cell(row[key]))}</td>")
        body.append(f'<tr class="{"passed" if row["passed"] else "failed"}">' + "".join(cells) + "</tr>")
    summary = report["summary"]
    drift_items = "".join(f"<li>{esc(c)}: {esc(', '.join(h))}</li>" for c, h in sorted(report["drift"].items()))
    lock = report.get("lock") or {}
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gpufleet fleet report</title>"
            f"<style>{_CSS}</style></head><body><h1>gpufleet fleet report</h1>"
            f"<div class=\"summary\">{summary['passed']} of {summary['hosts']} hosts pass"
            f" &middot; generated {esc(report['generated'])}"
            f" &middot; lock image {esc(str(lock.get('image_digest') or lock.get('image_id') or '-'))}</div>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<h2>Drift</h2><ul>{drift_items}</ul>" if drift_items else "")
            + "<p><small>Rows in red failed a check against the lock; yellow cells differ from the lock"
              " (where it says nothing: from most hosts)."
              "</small></p></body></html>\n")
