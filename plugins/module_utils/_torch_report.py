# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""The probe's output, the comparison of a host with the lock, and the fleet report.

Pure functions: the module torch_gpu_facts parses with them, the role gpu_verify compares
with them, and playbooks/verify.yml renders the report (JSON, Markdown, one HTML page).
"""

from __future__ import annotations

import html
import json
import re

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
    findings += fingerprint_findings(facts, lock)
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


def fingerprint_name(facts: dict) -> str:
    """What the lock keys a fingerprint by: the device kind and model ("cuda NVIDIA H100 80GB
    HBM3", "cpu AMD EPYC 9654"); the lock's image and driver are the fleet's anyway."""
    fingerprint = facts.get("fingerprint") or {}
    return f"{fingerprint.get('kind', '')} {fingerprint.get('model', '')}".strip()


def fingerprint_findings(facts: dict, lock: dict) -> list:
    """The fingerprint against the lock's for this device kind and model, where the lock has one
    (playbooks/lock.yml records it from a reference node). Without one the report compares the
    nodes of a group with each other instead (fingerprint_groups)."""
    wanted = (lock.get("fingerprints") or {}).get(fingerprint_name(facts))
    if not wanted:
        return []
    dtypes = (facts.get("fingerprint") or {}).get("dtypes") or {}
    findings = []
    for dtype, sha in sorted(wanted.items()):
        got = dtypes.get(dtype) or {}
        measured = got.get("sha256") or (f"error: {got['error']}" if "error" in got else "not computed")
        findings.append(_finding(f"fingerprint ({dtype})", str(sha), measured, measured == sha))
    return findings


def _probe_findings(facts: dict, lock: dict) -> list:
    """The probe's checks; performance against the lock's floor for the GPU's model."""
    findings = []
    names = {f"cuda:{d['index']}": d["name"] for d in facts.get("devices", [])}
    fraction = float(lock.get("min_performance", 0) or 0)
    for name, check in sorted(facts.get("checks", {}).items()):
        kind, _sep, device = name.partition("@")
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


def _row_fingerprint(facts: dict, observed: dict):
    """The row's fingerprint with what decides whom it must match bit for bit: the image the probe
    ran, the device kind and model, the driver. None when the probe computed none (older probes)."""
    fingerprint = facts.get("fingerprint")
    if not fingerprint:
        return None
    dtypes = {dtype: ({"sha256": v["sha256"], "steps": list(v.get("steps") or [])} if v.get("sha256")
                      else {"error": v.get("error", "not computed")})
              for dtype, v in sorted((fingerprint.get("dtypes") or {}).items())}
    return {"name": fingerprint_name(facts), "image": (observed.get("images") or {}).get("probe") or {},
            "driver": observed.get("driver_version") or facts.get("driver_version") or "none", "dtypes": dtypes}


def _fingerprint_group(row: dict, lock: dict) -> str:
    """Nodes that should compute the same bits: the same device kind and model, driver and image
    (the lock's image, however the node got it: registry, archive or built FROM it)."""
    fingerprint = row["fingerprint"]
    image = fingerprint["image"]
    label = "the locked image" if image and image_matches(image, lock) else (_image_label(image)[:19] if image else "?")
    return f"{fingerprint['name']}, driver {fingerprint['driver']}, {label}"


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
        "fingerprint": _row_fingerprint(facts, observed),
        "passed": all(f["passed"] for f in findings),
        "failed": [f for f in findings if not f["passed"]],
        "findings": findings,
    }


PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def fingerprint_lock_problems(fingerprints) -> list:
    """The lock's fingerprints: {"<kind> <model>": {"float32" | "bfloat16": <sha256 hex>}}."""
    if fingerprints in (None, {}):
        return []
    if not isinstance(fingerprints, dict):
        return [f"gpu_verify_lock.fingerprints must map '<kind> <model>' to dtypes; got {fingerprints!r}"]
    problems = []
    for name, dtypes in fingerprints.items():
        kind = str(name).split(" ", 1)[0]
        if kind not in ("cpu", "cuda") or not isinstance(dtypes, dict) or not dtypes:
            problems.append(f"gpu_verify_lock.fingerprints[{name!r}] must be named 'cpu <model>' or "
                            f"'cuda <model>' and map float32/bfloat16 to a SHA-256; got {dtypes!r}")
            continue
        for dtype, sha in dtypes.items():
            if dtype not in ("float32", "bfloat16") or not _SHA256.match(str(sha)):
                problems.append(f"gpu_verify_lock.fingerprints[{name!r}][{dtype!r}] must be a float32 or "
                                f"bfloat16 SHA-256 (64 hex digits); got {sha!r}")
    return problems


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
    driver = str(pins.get("driver_version") or "").rsplit(":", maxsplit=1)[-1].split("-")[0]   # 3:580.95.05-1.el9
    differ("nvidia_driver_version", driver, "driver_version", lock.get("driver_version"))
    differ("nvidia_container_toolkit_version", pins.get("toolkit_version"), "toolkit_version",
           lock.get("toolkit_version"))
    problems += fingerprint_lock_problems(lock.get("fingerprints"))
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


def _first_step(steps: list, reference: list):
    """The 1-based step at which two runs' parameters first differ (None when unknown)."""
    for index, (mine, theirs) in enumerate(zip(steps, reference, strict=False)):
        if mine != theirs:
            return index + 1
    return None


def fingerprint_groups(rows: list, lock: dict | None = None) -> list:
    """The nodes that should compute the same bits (same image, device kind and model, driver),
    each dtype's reference (the lock's where it has one for the kind and model, else the value
    most of the group's nodes share; a tie has none), and every node that differs from it: which
    dtype, and from which training step."""
    lock = lock or {}
    groups = {}
    for row in rows:
        if not row.get("unverified") and row.get("fingerprint"):
            groups.setdefault(_fingerprint_group(row, lock), []).append(row)
    out = []
    for group, members in sorted(groups.items()):
        locked = (lock.get("fingerprints") or {}).get(members[0]["fingerprint"]["name"]) or {}
        entry = {"group": group, "hosts": sorted(r["host"] for r in members), "reference": {}, "differs": []}
        dtypes = sorted({d for r in members for d in r["fingerprint"]["dtypes"]})
        for dtype in dtypes:
            values = {r["host"]: r["fingerprint"]["dtypes"].get(dtype, {}) for r in members}
            shas = [v.get("sha256") for v in values.values() if v.get("sha256")]
            counts = sorted((shas.count(v) for v in set(shas)), reverse=True)
            if locked.get(dtype):
                reference, source = locked[dtype], "lock"
            elif counts and (len(counts) == 1 or counts[0] > counts[1]):
                reference, source = max(set(shas), key=shas.count), f"{counts[0]} of {len(members)} nodes"
            else:
                reference, source = None, "no majority"
            entry["reference"][dtype] = {"sha256": reference, "from": source}
            if reference is None:
                continue
            steps = next((v.get("steps", []) for v in values.values() if v.get("sha256") == reference), [])
            for host, value in sorted(values.items()):
                if value.get("sha256") != reference:
                    entry["differs"].append({"host": host, "dtype": dtype,
                                             "measured": value.get("sha256") or value.get("error", "not computed"),
                                             "first_step": _first_step(value.get("steps", []), steps)})
        out.append(entry)
    return out


def build_report(rows: list, lock: dict, generated: str) -> dict:
    rows = sorted(rows, key=lambda r: r["host"])
    groups = fingerprint_groups(rows, lock)
    drifted = drift(rows, lock)
    fingerprint_hosts = sorted({d["host"] for g in groups for d in g["differs"]})
    if fingerprint_hosts:
        drifted["fingerprint"] = fingerprint_hosts
    return {"generated": generated, "lock": lock, "hosts": rows, "drift": drifted, "fingerprints": groups,
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
             "| " + " | ".join(title for _key, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report["hosts"]:
        cells = [_status(row) if key == "passed" else _cell(row[key]) for key, _title in COLUMNS]
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
    lines += fingerprint_lines(report.get("fingerprints") or [])
    return "\n".join(lines) + "\n"


def fingerprint_lines(groups: list) -> list:
    """The Markdown section on the numerical fingerprint: per group, the reference and who differs."""
    if not groups:
        return []
    lines = ["", "## Numerical fingerprint", "",
             "Nodes of one group (same image, device kind and model, driver) should compute the same bits."]
    for group in groups:
        refs = ", ".join(f"{dtype} {(ref['sha256'] or '-')[:16]} ({ref['from']})"
                         for dtype, ref in sorted(group["reference"].items()))
        lines += ["", f"- {group['group']}: {len(group['hosts'])} node(s); {refs or 'none computed'}"]
        for diff in group["differs"]:
            step = f", from step {diff['first_step']}" if diff["first_step"] else ""
            lines.append(f"  - {diff['host']}: {diff['dtype']} differs ({diff['measured'][:16]}{step})")
    return lines


def render_table(report: dict) -> list:
    """A compact fixed-width table for the end of a run, one line per host."""
    keys = [("host", "host"), ("gpus", "GPUs"), ("driver", "driver"), ("image", "image"), ("torch", "torch"),
            ("tflops_bf16", "bf16"), ("passed", "checks")]
    rows = [[title for _key, title in keys]]
    for row in report["hosts"]:
        rows.append([_status(row) if key == "passed" else _cell(row[key]) for key, _title in keys])
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
    head = "".join(f"<th>{esc(title)}</th>" for _key, title in COLUMNS)
    body = []
    for row in report["hosts"]:
        drifted = {c for c, hosts in report["drift"].items() if row["host"] in hosts}
        cells = []
        for key, _title in COLUMNS:
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
            + "".join(f"<p>{esc(line.strip())}</p>" if not line.startswith("#") else f"<h2>{esc(line[3:])}</h2>"
                      for line in fingerprint_lines(report.get("fingerprints") or []) if line)
            + "<p><small>Rows in red failed a check against the lock; yellow cells differ from the lock"
              " (where it says nothing: from most hosts)."
              "</small></p></body></html>\n")
