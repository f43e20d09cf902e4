# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""The `docker run` command line of a workbench service, its systemd quoting, and the record of
what a running service was started from.

Shared by the container_service role (through plugins/filter/container_service.py): one place
decides how GPUs, IPC, ulimits, limits, mounts and ports become docker arguments.
"""

from __future__ import annotations

import hashlib
import re
import secrets

UNLIMITED = -1
_ULIMIT_NAME = re.compile(r"^[a-z]+$")
_GPU_UUID = re.compile(r"^(GPU|MIG)-[0-9a-fA-F-]+$")
# systemd splits ExecStart= on whitespace and expands % specifiers and $ variables.
_SYSTEMD_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")
# A newline would end the directive and start another one; no quoting makes one safe.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL = CONTROL_CHARACTERS
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `v2 <salt> <sha256 of salt + parts>`: what a service was started from, without an unsalted hash
# of its secrets. The old record was a bare sha256 of unit, files and driver.
_APPLIED_V2 = re.compile(r"^v2 ([0-9a-f]{32}) ([0-9a-f]{64})$")
_APPLIED_V1 = re.compile(r"^[0-9a-f]{64}$")


class ServiceSpecError(ValueError):
    """An input a service cannot run with; the message names the variable."""


def gpu_devices(gpus, gpu_count: int) -> list[str]:
    """GPU selectors from `all`, `none`, a count, or a list of indexes/UUIDs.

    Returns [] for no GPUs, ["all"] for every GPU, else the device list. A count or an index
    larger than what the host has is refused: the service would fail at every start.
    """
    if gpus in (None, "", "none", 0, "0"):
        return []
    if gpus == "all":
        return ["all"] if gpu_count > 0 else []
    if isinstance(gpus, bool):
        raise ServiceSpecError(f"gpus must be all, none, a count or a list of GPU indexes/UUIDs; got {gpus!r}")
    if isinstance(gpus, int) or (isinstance(gpus, str) and gpus.isdigit()):
        count = int(gpus)
        if count < 0 or count > gpu_count:
            raise ServiceSpecError(f"gpus asks for {count} GPU(s); the host has {gpu_count}")
        return [str(i) for i in range(count)]
    if isinstance(gpus, (list, tuple)):
        devices = []
        for item in gpus:
            text = str(item)
            if text.isdigit():
                if int(text) >= gpu_count:
                    raise ServiceSpecError(f"gpus lists GPU index {text}; the host has {gpu_count} GPU(s)")
            elif not _GPU_UUID.fullmatch(text):
                raise ServiceSpecError(f"gpus entries must be GPU indexes or UUIDs (GPU-..., MIG-...); got {text!r}")
            devices.append(text)
        if len(set(devices)) != len(devices):
            raise ServiceSpecError(f"gpus lists a GPU twice: {devices}")
        return devices
    raise ServiceSpecError(f"gpus must be all, none, a count or a list of GPU indexes/UUIDs; got {gpus!r}")


def gpu_args(devices: list[str], cdi: bool) -> list[str]:
    """Docker arguments giving a container these GPUs: CDI device names, or the nvidia runtime.

    No GPUs is said explicitly too: images built FROM the official pytorch/pytorch ones set
    NVIDIA_VISIBLE_DEVICES=all, which the nvidia runtime honours wherever it runs a container
    (a default-runtime nvidia, or a site's wrapper), handing it every GPU of the node."""
    if not devices:
        return ["--env", "NVIDIA_VISIBLE_DEVICES=void"]
    if cdi:
        return [arg for dev in devices for arg in ("--device", f"nvidia.com/gpu={dev}")]
    selector = "all" if devices == ["all"] else f'"device={",".join(devices)}"'
    return ["--runtime", "nvidia", "--gpus", selector]


def ulimit_args(ulimits: dict) -> list[str]:
    """`--ulimit name=soft:hard` for each entry; -1 is unlimited, an int sets soft and hard."""
    args = []
    for name, value in sorted((ulimits or {}).items()):
        if not _ULIMIT_NAME.fullmatch(str(name)):
            raise ServiceSpecError(f"ulimits: {name!r} is not a ulimit name (memlock, stack, nofile, ...)")
        if isinstance(value, dict):
            soft, hard = value.get("soft"), value.get("hard")
        else:
            soft = hard = value
        for part in (soft, hard):
            if isinstance(part, bool) or not isinstance(part, int) or part < UNLIMITED:
                raise ServiceSpecError(f"ulimits: {name} must be -1 (unlimited) or a number; got {value!r}")
        args += ["--ulimit", f"{name}={soft}:{hard}"]
    return args


def docker_run_argv(spec: dict, gpu_count: int, cdi: bool, gpus_ready: bool = True) -> list[str]:
    """The complete `docker run` argv of a service (docker binary first).

    The GPU selection is checked against the GPUs the host has; with ``gpus_ready`` false (the
    driver is installed but not loaded yet) none are handed over, or the container could not start.
    """
    name = spec["name"]
    # No --rm: Docker before 25 (Debian 12's 20.10, moby#46308) removes --rm containers when dockerd
    # restarts, live-restore or not. The runner (files/container-run) removes a stopped one instead.
    argv = [spec.get("docker", "/usr/bin/docker"), "run", "--name", name,
            "--pull", "never", "--init", "--label", f"gpufleet.service={name}"]
    if spec.get("hostname"):
        argv += ["--hostname", spec["hostname"]]
    if spec.get("user"):
        argv += ["--user", spec["user"]]
    if spec.get("workdir"):
        argv += ["--workdir", spec["workdir"]]
    argv += ["--security-opt", "no-new-privileges"]
    for cap in spec.get("cap_drop", []):
        argv += ["--cap-drop", cap]
    for cap in spec.get("cap_add", []):
        argv += ["--cap-add", cap]
    if spec.get("ipc_host"):
        argv += ["--ipc", "host"]
    elif spec.get("shm_size"):
        argv += ["--shm-size", str(spec["shm_size"])]
    argv += ulimit_args(spec.get("ulimits", {}))
    if spec.get("memory"):
        argv += ["--memory", str(spec["memory"])]
    if spec.get("cpus"):
        argv += ["--cpus", str(spec["cpus"])]
    devices = gpu_devices(spec.get("gpus", "none"), gpu_count)
    argv += gpu_args(devices if gpus_ready else [], cdi)
    for port in spec.get("publish", []):
        argv += ["--publish", port]
    for mount in spec.get("volumes", []):
        target = f"{mount['host']}:{mount['container']}"
        argv += ["--volume", target + (":ro" if mount.get("read_only") else "")]
    for key, value in sorted(spec.get("env", {}).items()):
        argv += ["--env", f"{key}={value}"]
    argv += [spec["image"], *spec.get("command", [])]
    return argv


def supervised_argv(argv: list[str], runner: str) -> list[str]:
    """The ExecStart= argv that runs ``argv`` through the container runner (files/container-run).

    The container is labelled with an id of its run line, so that the runner, started again after
    the docker client lost a restarting dockerd, follows the container live-restore kept only if it
    was started from this very line; otherwise it replaces it.
    """
    run_id = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:20]
    name = argv[argv.index("--name") + 1]
    at = argv.index(f"gpufleet.service={name}") + 1
    labelled = [*argv[:at], "--label", f"gpufleet.run={run_id}", *argv[at:]]
    return [runner, "start", name, run_id, *labelled]


def _refuse_control(text: str, what: str) -> None:
    if _CONTROL.search(text):
        raise ValueError(f"{what}: {text!r} has a control character (newline, tab, ...); a unit file cannot hold it")


def systemd_quote(argv: list[str]) -> str:
    """One ExecStart= line: words quoted for systemd, `%` and `$` kept literal.

    A word with a control character is refused (ValueError): a newline would start a new directive.
    """
    words = []
    for word in argv:
        _refuse_control(str(word), "ExecStart= word")
        text = str(word).replace("%", "%%").replace("$", "$$")
        if _SYSTEMD_PLAIN.match(text):
            words.append(text)
        else:
            escaped = text.replace("\\", "\\\\").replace('"', '\\"')
            words.append(f'"{escaped}"')
    return " ".join(words)


def systemd_environment(env: dict) -> str:
    """`Environment="NAME=value"` lines, one per variable, sorted by name as Jinja's dictsort does
    (case-insensitively: HTTP_PROXY before HTTPS_PROXY, as the docker role's drop-in always had).

    systemd does not expand `$` in Environment= (systemd.exec(5)) but does expand `%` specifiers
    and C escapes inside the quotes, so `%` is doubled and backslash and double quote escaped.
    A bad name, or a control character in a value, is refused (ValueError).
    """
    lines = []
    items = sorted(((str(key), value) for key, value in (env or {}).items()),
                   key=lambda item: (item[0].lower(), item[0]))
    for name, value in items:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"environment variable name {name!r} must match {_ENV_NAME.pattern}")
        text = str(value)
        _refuse_control(text, f"environment variable {name}")
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        lines.append(f'Environment="{name}={escaped}"')
    return "\n".join(lines)


def _digest(salt: str, data: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + data).hexdigest()


def _v2_record(salt: str, parts: list[str]) -> str:
    # A NUL between every part: no text can be moved from one part to the next unseen.
    joined = "\0".join(parts).encode("utf-8")
    return f"v2 {salt} {_digest(salt, joined)}"


def _v1_hash(parts: list[str]) -> str:
    """The old record: `(unit ~ (files | join('\\0')) ~ driver) | hash('sha256')` in service.yml.

    Ansible doubles backslashes inside `{{ }}` before Jinja reads them, so that join('\\0') put the
    two characters backslash and zero between the files, not a NUL; nothing between the unit and
    the first file, nor between the last file and the driver."""
    unit, files, driver = parts[0], parts[1:-1], parts[-1]
    return hashlib.sha256((unit + "\\0".join(files) + driver).encode("utf-8")).hexdigest()


def applied_record(applied_text: str, parts: list) -> dict:
    """The record of what a service is started from, and whether the host's record says the same.

    ``parts``: the unit text, each file's content, the driver (in that order). ``applied_text``:
    the record the host holds ('' when none). A v2 record keeps its salt, so an unchanged service
    gets the same record back and nothing is written. An old bare-sha256 record of the same parts
    counts as current (an upgraded node is not restarted for it) and is replaced by a v2 record.

    Returns {"record": text to write, "current": bool}.
    """
    parts = [str(part) for part in parts]
    if len(parts) < 2:
        raise ValueError(f"parts must hold the unit text, the files' contents and the driver; got {len(parts)} part(s)")
    text = (applied_text or "").strip()
    match = _APPLIED_V2.fullmatch(text)
    if match:
        record = _v2_record(match.group(1), parts)
        return {"record": record, "current": record == text}
    fresh = _v2_record(secrets.token_hex(16), parts)
    if _APPLIED_V1.fullmatch(text):
        return {"record": fresh, "current": secrets.compare_digest(text, _v1_hash(parts))}
    return {"record": fresh, "current": False}
