#!/usr/bin/python
# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_state
short_description: Read packages, files and systemd units of a node in one call
version_added: 1.0.0
description:
  - Reads, in one module call, what a role's tasks would otherwise each read for themselves - the version,
    install state and hold of packages (one C(dpkg-query)), the type, mode, owner, group and a salted checksum
    of files (content too for the ones under O(read)), the load, active and unit-file state of systemd units (one
    C(systemctl show)) and whether apt has package lists.
  - The roles compare the result with their wanted state through the filters C(gpufleet.node.node_state_file_ok),
    C(node_state_packages_ok), C(node_state_not_held) and C(node_state_unit_ok) and skip the tasks that would
    change nothing - on a converged node, most of a role's remote calls.
  - File checksums are salted - sha256 of a random salt drawn for each call (returned as RV(checksum_salt)) and
    the file's bytes - so a result, printed at C(-v), never holds a plain hash of a secret file (a token, a TLS
    key) that could be checked against a guess or compared across hosts and runs. The
    C(gpufleet.node.node_state_file_ok) filter hashes the wanted content with the same salt.
  - Read-only - never reports a change.
author:
  - gpufleet.node maintainers (!UNKNOWN)
options:
  packages:
    description: Package names to read from dpkg (rpm on EL); names it does not know are left out of the result.
    type: list
    elements: str
    default: []
  files:
    description: Paths to stat (not following symlinks).
    type: list
    elements: path
    default: []
  read:
    description: Paths whose content is returned too (base64), at most 1 MiB each; they are stat'ed as O(files).
    type: list
    elements: path
    default: []
  units:
    description: systemd units to read.
    type: list
    elements: str
    default: []
  apt_lists_dir:
    description: Count apt's package lists in this folder (V(null) - not counted).
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Read what the Docker role manages
  gpufleet.node.node_state:
    packages: [docker.io, containerd, runc]
    files: [/etc/docker]
    read: [/etc/docker/daemon.json]
    units: [docker.service]
    apt_lists_dir: /var/lib/apt/lists
  register: docker_state

- name: Write daemon.json only where it differs
  ansible.builtin.copy:
    content: "{{ wanted }}"
    dest: /etc/docker/daemon.json
    mode: "0644"
  when: not (docker_state | gpufleet.node.node_state_file_ok('/etc/docker/daemon.json', content=wanted, mode='0644'))
"""

RETURN = r"""
package_manager:
  description: V(dpkg), V(rpm) (versions only, no holds) or V(null); the install and hold filters match on V(dpkg) only.
  returned: always
  type: str
packages:
  description: Per known package - C(version), C(installed), C(held) and dpkg's C(status).
  returned: always
  type: dict
  sample: {"docker.io": {"version": "20.10.24+dfsg1-1+deb12u1", "installed": true, "held": true,
           "status": "hold ok installed"}}
checksum_salt:
  description:
    - The random salt of this call's file checksums (32 hex digits, 16 bytes), new at every call.
    - A file's C(checksum) is the sha256 of these 16 bytes followed by the file's content.
  returned: always
  type: str
  sample: 5c0a7d1e9b3f42a8e6d1c07b93f4a2e1
files:
  description:
    - Per path - C(exists), and for existing paths C(isdir), C(isreg), C(islnk), C(mode), C(owner), C(group),
      C(uid), C(gid), C(size), for regular files C(checksum) (salted sha256, see RV(checksum_salt)) and, under
      O(read), C(content) (base64).
    - Never an unsalted hash of a file's content.
  returned: always
  type: dict
units:
  description:
    - Per unit - C(load), C(active) and C(enabled) (systemd's LoadState, ActiveState, UnitFileState).
    - Empty without systemd.
  returned: always
  type: dict
apt_lists:
  description: Number of apt package lists in O(apt_lists_dir) (0 when it has none or does not exist).
  returned: when O(apt_lists_dir) is set
  type: int
"""

import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.gpufleet.node.plugins.module_utils._node_state import (  # noqa: E402
    count_apt_lists,
    new_salt,
    probe_packages,
    probe_units,
    stat_path,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "files": {"type": "list", "elements": "path", "default": []},
            "read": {"type": "list", "elements": "path", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "apt_lists_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params

    def run(argv):
        if not shutil.which(argv[0]):
            return None, "", ""
        return module.run_command(argv, environ_update={"LC_ALL": "C"})

    try:
        manager, packages = probe_packages(run, params["packages"])
    except RuntimeError as exc:
        module.fail_json(msg=str(exc))
    files = {}
    salt = new_salt()
    read = set(params["read"])
    for path in dict.fromkeys(params["files"] + params["read"]):
        try:
            files[path] = stat_path(path, salt, read=path in read)
        except OSError as exc:
            module.fail_json(msg=f"cannot read {path}: {exc}")
    result = {
        "changed": False,
        "package_manager": manager,
        "packages": packages,
        "checksum_salt": salt,
        "files": files,
        "units": probe_units(run, params["units"]),
    }
    if params["apt_lists_dir"]:
        result["apt_lists"] = count_apt_lists(params["apt_lists_dir"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
