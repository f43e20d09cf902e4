# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Filters comparing hosts with the lock and rendering the fleet report (module_utils/_torch_report.py)."""

from __future__ import annotations

from ansible_collections.gpufleet.node.plugins.module_utils._torch_report import (
    build_report,
    compare,
    failures_message,
    lock_problems,
    render_html,
    render_markdown,
    render_table,
    report_row,
    unverified_reason,
    unverified_row,
)

BASE_LABEL = "org.gpufleet.base"


def gpu_verify_findings(facts, observed, lock, require_gpu=True, groups=()):
    """Each check of a host against the lock: check, expected, measured, passed."""
    return compare(dict(facts or {}), dict(observed or {}), dict(lock or {}), bool(require_gpu), list(groups))


def gpu_verify_failures(findings, host):
    return failures_message(host, list(findings))


def gpu_verify_row(findings, host, facts, observed):
    return report_row(host, dict(facts or {}), dict(observed or {}), list(findings))


def gpu_verify_images(container_results, images, probe_image="", base_images=()):
    """{service or 'probe': {id, digests, base, from_base}} from docker_container_info results and
    docker_image_info images. A workbench image built FROM the pin (pytorch_image_source `build`)
    names its base in the label org.gpufleet.base; from_base is true only when that base is on the
    host and its layers are the first layers of the image (a label alone proves nothing)."""
    every = list(images or []) + list(base_images or [])
    by_id = {i.get("Id"): i for i in every}

    def find(ref):
        return by_id.get(ref) or next((i for i in every if ref in (i.get("RepoTags") or [])
                                       or ref in (i.get("RepoDigests") or [])), {})

    def describe(ref):
        image = find(ref)
        found = {"id": image.get("Id", ""), "digests": list(image.get("RepoDigests") or [])}
        base_ref = ((image.get("Config") or {}).get("Labels") or {}).get(BASE_LABEL, "")
        if "@sha256:" in base_ref:
            digest = "@" + base_ref.split("@", 1)[1]
            base = next((i for i in every if any(d.endswith(digest) for d in i.get("RepoDigests") or [])), {})
            layers = list((image.get("RootFS") or {}).get("Layers") or [])
            base_layers = list((base.get("RootFS") or {}).get("Layers") or [])
            found["base"] = base_ref
            found["from_base"] = bool(base_layers) and layers[:len(base_layers)] == base_layers
        return found

    found = {r["item"]: describe(r["container"]["Image"]) for r in container_results or [] if r.get("exists")}
    if probe_image:
        found["probe"] = describe(probe_image)
    return found


def gpu_verify_base_refs(images):
    """The pinned bases (label org.gpufleet.base) that built images name, to inspect them too."""
    refs = {((i.get("Config") or {}).get("Labels") or {}).get(BASE_LABEL, "") for i in images or []}
    return sorted(r for r in refs if "@sha256:" in r)


def gpu_verify_unverified(hosts, hostvars, active_hosts):
    """Rows for the play's nodes that have no verification result and a reason for it."""
    rows = []
    for host in hosts:
        node = hostvars[host]
        if "gpu_verify_result" in node:
            continue
        keys = ("fleet_run_failed_stage", "fleet_run_failed_message", "fleet_run_not_reached")
        reason = unverified_reason({k: node[k] for k in keys if k in node}, host in active_hosts)
        if reason:
            rows.append(unverified_row(host, reason))
    return rows


def gpu_verify_lock_problems(lock, pins):
    """Why the inventory's pins disagree with the lock (empty: they agree)."""
    return lock_problems(dict(lock or {}), dict(pins or {}))


def fleet_report(rows, lock, generated):
    return build_report([dict(r) for r in rows], dict(lock or {}), str(generated))


class FilterModule:
    def filters(self):
        return {
            "gpu_verify_findings": gpu_verify_findings,
            "gpu_verify_failures": gpu_verify_failures,
            "gpu_verify_row": gpu_verify_row,
            "gpu_verify_images": gpu_verify_images,
            "gpu_verify_base_refs": gpu_verify_base_refs,
            "gpu_verify_unverified": gpu_verify_unverified,
            "gpu_verify_lock_problems": gpu_verify_lock_problems,
            "fleet_report": fleet_report,
            "fleet_report_markdown": render_markdown,
            "fleet_report_html": render_html,
            "fleet_report_table": render_table,
        }
