# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Read a node's state in one call, and compare it with what a task would make of it.

``probe_*`` run on the node (module ``gpufleet.node.node_state``); the ``*_ok`` functions run
on the controller (filters in ``plugins/filter/node_state.py``) and decide whether a task can be
skipped because the node already is as the task would leave it.

The comparisons only ever answer True when the probe shows the exact end state: anything the
probe could not read, a symlink, an unknown package spec or unit state answers False, and the
task then runs and decides for itself. A wrong False costs one task's time; a wrong True would
leave drift in place, so every True is an exact match.
"""

from __future__ import annotations

import base64
import fnmatch
import grp
import hashlib
import os
import pwd
import secrets
import stat

# Largest file whose content the probe returns (daemon.json, small configuration files).
READ_LIMIT = 1024 * 1024

_DPKG_FORMAT = "${Package}\\t${Version}\\t${Status}\\n"
# Same fields as dpkg's, so one parser reads both; rpm has no holds (versionlock is a plugin).
_RPM_FORMAT = "%{NAME}\\t%{VERSION}-%{RELEASE}\\tinstall ok installed\\n"
_UNIT_PROPERTIES = "Id,LoadState,ActiveState,UnitFileState"


# --- on the node ---------------------------------------------------------------------------


def parse_dpkg_query(text):
    """Parse ``dpkg-query -W -f '${Package}\\t${Version}\\t${Status}\\n'`` output.

    ``${Status}`` is "<want> <error> <state>": "install ok installed", "hold ok installed",
    "deinstall ok config-files", ...
    """
    packages = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        name, version, status = fields
        words = status.split()
        if len(words) != 3:
            continue
        want, _error, state = words
        packages[name] = {
            "version": version,
            "installed": state == "installed",
            "held": want == "hold",
            "status": status,
        }
    return packages


def probe_packages(run_command, names):
    """Versions, install state and holds of ``names`` with one dpkg-query (or rpm) call.

    Returns (manager, packages): manager "dpkg", "rpm" (versions only, holds unknown) or None
    where the host has neither; packages lists only installed or known names.
    """
    if not names:
        return "dpkg", {}
    rc, out, err = run_command(["dpkg-query", "-W", "-f", _DPKG_FORMAT, "--", *names])
    if rc is not None:
        # rc 1: some names are unknown to dpkg (reported on stderr); the others are on stdout.
        if rc not in (0, 1):
            raise RuntimeError(f"dpkg-query failed (rc {rc}): {err.strip()}")
        return "dpkg", parse_dpkg_query(out)
    rc, out, err = run_command(["rpm", "-q", "--qf", _RPM_FORMAT, "--", *names])
    if rc is None:
        return None, {}
    # rpm -q exits with the number of names that are not installed.
    if not 0 <= rc <= len(names):
        raise RuntimeError(f"rpm -q failed (rc {rc}): {err.strip()}")
    return "rpm", parse_dpkg_query(out)


def new_salt():
    """A fresh salt for one probe's checksums (hex)."""
    return secrets.token_hex(16)


def salted_checksum(salt, data=b""):
    """sha256 of the salt's bytes and ``data``: what the probe returns as a file's ``checksum``.

    Salted per call so the result (printed at -v) never holds a plain hash of a secret file that
    could be matched against a guess or another host's result.
    """
    digest = hashlib.sha256(bytes.fromhex(salt))
    if isinstance(data, str):
        data = data.encode("utf-8")
    digest.update(data)
    return digest


def stat_path(path, salt, read=False):
    """What the file/copy/template modules would compare: type, mode, owner, group, content.

    The content of a regular file is compared through ``checksum``, a sha256 salted with ``salt``
    (hex, one per probe, see salted_checksum)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    entry = {
        "exists": True,
        "isdir": stat.S_ISDIR(st.st_mode),
        "isreg": stat.S_ISREG(st.st_mode),
        "islnk": stat.S_ISLNK(st.st_mode),
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
    }
    try:
        entry["owner"] = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        entry["owner"] = None
    try:
        entry["group"] = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        entry["group"] = None
    if entry["islnk"] and read and os.path.isfile(path):
        # A linked file is read through the link (what slurp does); file_ok never matches a link.
        entry["content"] = base64.b64encode(_read_small(path)).decode("ascii")
    if entry["isreg"]:
        digest = salted_checksum(salt)
        with open(path, "rb") as handle:
            data = handle.read() if read and st.st_size <= READ_LIMIT else None
            if data is not None:
                digest.update(data)
                entry["content"] = base64.b64encode(data).decode("ascii")
            else:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        entry["checksum"] = digest.hexdigest()
    return entry


def _read_small(path):
    with open(path, "rb") as handle:
        data = handle.read(READ_LIMIT + 1)
    if len(data) > READ_LIMIT:
        raise OSError(f"larger than {READ_LIMIT} bytes")
    return data


def parse_systemctl_show(text):
    """Parse ``systemctl show --property=Id,...`` output for several units (blank-line separated)."""
    units = []
    current = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
                current = {}
            continue
        key, _sep, value = line.partition("=")
        current[key] = value
    if current:
        units.append(current)
    return units


def probe_units(run_command, names):
    """LoadState, ActiveState and UnitFileState of ``names`` with one systemctl call."""
    if not names:
        return {}
    rc, out, _err = run_command(["systemctl", "show", f"--property={_UNIT_PROPERTIES}", "--", *names])
    if rc is None or rc != 0:
        # No systemd (a plain container) or no bus: nothing known, every unit task runs.
        return {}
    shown = parse_systemctl_show(out)
    result = {}
    # systemctl prints one block per argument, in order.
    for name, props in zip(names, shown, strict=False):
        result[name] = {
            "load": props.get("LoadState", ""),
            "active": props.get("ActiveState", ""),
            "enabled": props.get("UnitFileState", ""),
        }
    return result


def count_apt_lists(lists_dir):
    """How many package lists apt has (0 on a fresh host, where installs need an update first)."""
    try:
        return sum(1 for name in os.listdir(lists_dir) if fnmatch.fnmatch(name, "*_Packages*"))
    except OSError:
        return 0


# --- on the controller ---------------------------------------------------------------------


def file_ok(probe, path, state="file", content=None, mode=None, owner=None, group=None):
    """True when ``path`` on the node already is what a file/copy/template task would leave.

    state: "file" (a regular file; with ``content`` its checksum, salted with the probe's
    ``checksum_salt``, must match), "directory" or "absent".
    mode/owner/group: compared when given (mode as an octal string such as "0644").
    """
    entry = ((probe or {}).get("files") or {}).get(path)
    if not entry:
        return False
    if state == "absent":
        return entry.get("exists") is False
    if not entry.get("exists") or entry.get("islnk"):
        return False
    if state == "directory" and not entry.get("isdir"):
        return False
    if state == "file":
        if not entry.get("isreg"):
            return False
        if content is not None and not _content_ok(probe, entry, content):
            return False
    elif state != "directory":
        return False
    if mode is not None and entry.get("mode") != _normal_mode(mode):
        return False
    return _id_ok(entry, "owner", "uid", owner) and _id_ok(entry, "group", "gid", group)


def _content_ok(probe, entry, content):
    salt = probe.get("checksum_salt")
    checksum = entry.get("checksum")
    if not isinstance(salt, str) or not isinstance(checksum, str):
        return False
    try:
        wanted = salted_checksum(salt, content).hexdigest()
    except ValueError:
        # Not a hex salt: nothing this probe says can be matched.
        return False
    return checksum == wanted


def _id_ok(entry, name_key, id_key, wanted):
    """An owner or group given as a name compares with the name, as a number with the uid/gid."""
    if wanted is None:
        return True
    if isinstance(wanted, int) or str(wanted).isdigit():
        return entry.get(id_key) == int(wanted)
    return entry.get(name_key) == wanted


def _normal_mode(mode):
    text = str(mode)
    if not text.isdigit():
        # Symbolic modes (u=rw,...) are not compared: never a match.
        return None
    return f"{int(text, 8):04o}"


def file_content(probe, path):
    """The text of ``path`` as read by the probe ('' when the file does not exist)."""
    entry = ((probe or {}).get("files") or {}).get(path) or {}
    if not entry.get("exists"):
        return ""
    if "content" not in entry:
        raise ValueError(f"{path}: the probe did not read its content (list it under read, at most {READ_LIMIT} bytes)")
    try:
        return base64.b64decode(entry["content"]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from exc


def package_spec_ok(packages, spec):
    """True when an apt spec ("name", "name=version", "name=version*") is installed as written."""
    name, sep, version = str(spec).partition("=")
    if any(ch in name for ch in "<>*?[ "):
        return False
    entry = packages.get(name)
    if not entry or not entry.get("installed"):
        return False
    if not sep:
        return True
    if version.endswith("*") and "*" not in version[:-1]:
        return entry.get("version", "").startswith(version[:-1])
    if any(ch in version for ch in "*?["):
        return False
    return entry.get("version") == version


def packages_ok(probe, specs):
    """True when every spec is installed as written (apt's state=present would change nothing)."""
    probe = probe or {}
    if probe.get("package_manager") != "dpkg":
        return False
    packages = probe.get("packages") or {}
    return all(package_spec_ok(packages, spec) for spec in specs)


def packages_installed(probe, names):
    """The subset of ``names`` installed on the node (sorted)."""
    packages = (probe or {}).get("packages") or {}
    return sorted(name for name in names if (packages.get(name) or {}).get("installed"))


def packages_not_held(probe, names):
    """The subset of ``names`` not on hold, in order; every name where the probe is not dpkg's."""
    probe = probe or {}
    packages = probe.get("packages") or {}
    if probe.get("package_manager") != "dpkg":
        return list(dict.fromkeys(names))
    return [name for name in dict.fromkeys(names) if not (packages.get(name) or {}).get("held")]


def unit_ok(probe, name, enabled=None, started=None):
    """True when systemd reports the unit as a systemd_service task would leave it.

    enabled: True needs UnitFileState "enabled", False "disabled"; started: True needs
    ActiveState "active", False "inactive"; None is not compared.
    """
    entry = ((probe or {}).get("units") or {}).get(name)
    if not entry or entry.get("load") != "loaded":
        return False
    if enabled is not None and entry.get("enabled") != ("enabled" if enabled else "disabled"):
        return False
    return started is None or entry.get("active") == ("active" if started else "inactive")
