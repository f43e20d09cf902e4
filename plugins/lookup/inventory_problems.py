# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Lookup: what is wrong with a host's gpufleet.node variables, before anything changes."""

from __future__ import annotations

DOCUMENTATION = r"""
name: inventory_problems
author:
  - gpufleet.node maintainers (!UNKNOWN)
version_added: "1.0.0"
short_description: Check every gpufleet.node variable of a host for its format, before any change
description:
  - Takes each public variable of the collection's roles as the host sees it (inventory, extra
    vars, else the role default), templates it, and checks its format (URLs, absolute paths,
    package versions, ports, ids, names, sizes, the lock's fields) and the values that conflict
    (two services on one port, a daemon option that a dedicated variable sets).
  - A variable that refers to an undefined one (a Vault secret not written yet, a lock not
    written yet) is named with where it is expected, instead of failing in a template later.
  - Returns the list of problems, empty when every value is usable. Messages never hold a
    secret's value.
options:
  _terms:
    description: Roles whose variables are checked; none means every role, the run variables and
      the checks across roles.
    type: list
    elements: str
    required: false
  writing_lock:
    description: The run writes the lock (playbooks/lock.yml), so the pin may be missing still
      (an empty pytorch_image_digest, a lock without image fields); everything else is checked.
    type: bool
    default: false
  unknown:
    description: What a variable named like a role's own but not one of them (a typo) gets.
    type: str
    choices: [warn, fail, ignore]
    default: warn
"""

EXAMPLES = r"""
- name: Check this host's variables
  ansible.builtin.assert:
    that: __problems | length == 0
    fail_msg: "{{ __problems | join('; ') }}"
    quiet: true
  vars:
    __problems: "{{ query('gpufleet.node.inventory_problems') }}"
"""

RETURN = r"""
_raw:
  description: One message per problem, each naming the variable, the value and what is expected.
  type: list
  elements: str
"""

import difflib  # noqa: E402 -- imports follow the docs (plugin layout)
import re  # noqa: E402 -- as above
from pathlib import Path  # noqa: E402 -- as above

from ansible.errors import AnsibleError, AnsibleUndefinedVariable  # noqa: E402 -- as above
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # noqa: E402 -- as above
from ansible.plugins.lookup import LookupBase  # noqa: E402 -- as above
from ansible.utils.display import Display  # noqa: E402 -- as above
from ansible_collections.gpufleet.node.plugins.module_utils._inputs import (  # noqa: E402 -- as above
    ROLES,
    SECRETS,
    problems,
)

display = Display()
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
RUN_VARIABLES = ("gpufleet_serial", "gpufleet_max_fail_percentage", "gpufleet_upgrade_serial",
                 "gpufleet_upgrade_toolkit")
# Facts the roles set during a run (named like inputs, never read from the inventory).
OUTPUTS = frozenset({"pytorch_image_ref", "ssh_container_host_key", "node_drain_undrain", "gpu_verify_result"})


def undefined_message(name, error):
    """Where a variable that refers to an undefined one is expected to come from."""
    text = str(getattr(error, "message", "") or error)
    found = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", text)
    missing = found.group(1) if found else None
    if missing and missing.startswith("vault_"):
        return (f"{name} refers to {missing}, which is not defined: it is a secret from the inventory's Ansible "
                f"Vault file (group_vars/gpu_nodes/vault.yml in the example layout). Create it as README.md, "
                f"Quick start, step 3 shows, and pass the vault password (--ask-vault-pass)")
    if "gpu_verify_lock" in text or missing == "gpu_verify_lock":
        return (f"{name} refers to the lock (gpu_verify_lock), which does not have it: write the lock with "
                f"playbooks/lock.yml (README.md, Quick start, step 4)")
    if missing:
        return f"{name} refers to {missing}, which is not defined anywhere in the inventory"
    return f"{name} cannot be templated: {text}"


class LookupModule(LookupBase):
    def _role_file(self, role, relative):
        path = ROLES_DIR / role / relative
        try:
            return self._loader.load_from_file(str(path), trusted_as_template=True) or {}
        except TypeError:  # ansible-core before 2.19: everything loaded is a template
            return self._loader.load_from_file(str(path)) or {}

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        roles = [str(term) for term in terms] or list(ROLES)
        writing_lock = self.get_option("writing_lock")
        unknown_roles = sorted(set(roles) - set(ROLES))
        if unknown_roles:
            raise AnsibleError(f"inventory_problems: no such role {unknown_roles}; roles: {', '.join(ROLES)}")

        specs = {role: self._role_file(role, "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
                 for role in ROLES}
        names = {role: list(specs[role]) for role in ROLES}
        merged = {}
        for role in ROLES:
            merged.update(self._role_file(role, "defaults/main.yml"))
        merged.update(variables)
        templar = self._templar.copy_with_new_env()
        templar.available_variables = merged

        found, values, broken = [], {}, []

        def take(name):
            try:
                values[name] = templar.template(merged[name])
            except AnsibleUndefinedVariable as err:
                if not (writing_lock and "gpu_verify_lock" in str(err)):
                    found.append(undefined_message(name, err))
                broken.append(name)
            except AnsibleError as err:
                # a template error may quote the template's text: never a secret's
                reason = "(the error is not shown: the value is a secret)" if name in SECRETS else (
                    getattr(err, "message", "") or err)
                found.append(f"{name} cannot be templated: {reason}")
                broken.append(name)

        for role in roles:
            for name in names[role]:
                if name in merged:
                    take(name)
        every_role = roles == list(ROLES)
        if every_role:
            for name in RUN_VARIABLES:
                if name in variables:
                    take(name)
            values["__groups_all"] = list((variables.get("groups") or {}).get("all", []))
            if "ansible_port" in variables:
                take("ansible_port")
                values["__ansible_port"] = values.pop("ansible_port", None)
        self._type_check(roles, specs, values, found, broken)
        # What did not template or type-check has its message already; the format checks would repeat it.
        found += [problem for problem in problems(values, roles=tuple(roles), writing_lock=writing_lock)
                  if not problem.startswith(tuple(f"{name}{end}" for name in broken for end in " [."))]
        self._unknown(roles, names, variables, found)
        return found

    @staticmethod
    def _type_check(roles, specs, values, found, broken):
        """Types and choices from each role's argument spec, for every role at once: one message for
        the fleet instead of one per host. The format checks then see the values as the roles will."""
        for role in roles:
            given = {name: values[name] for name in specs[role] if name in values}
            result = ArgumentSpecValidator(specs[role]).validate(given)
            for error in result.error_messages:
                message = error
                for secret in SECRETS:
                    if isinstance(given.get(secret), str) and len(given[secret]) >= 4:
                        message = message.replace(given[secret], "********")
                found.append(f"{message} (argument spec of gpufleet.node.{role})")
                broken.extend(name for name in given if f"'{name}'" in message or f" {name} " in f" {message} ")
            values.update({name: result.validated_parameters[name] for name in given
                           if name in result.validated_parameters and name not in broken})

    def _unknown(self, roles, names, variables, found):
        """Variables named like a role's own that the role does not have: a typo, usually."""
        mode = self.get_option("unknown")
        if mode == "ignore":
            return
        every = {name for role in ROLES for name in names[role]} | OUTPUTS
        for role in roles:
            prefix = f"{role}_"
            for name in sorted(variables):
                if not name.startswith(prefix) or name in every:
                    continue
                close = difflib.get_close_matches(name, names[role], n=1)
                message = (f"{name} is not a variable of gpufleet.node.{role}"
                           + (f" (did you mean {close[0]}?)" if close else "")
                           + f"; its variables: roles/{role}/README.md")
                if mode == "fail":
                    found.append(message)
                else:
                    display.warning(message)
