# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Where a registry's pull token may be asked for (see module_utils/_registry.py).

``registry_token_url`` turns a 401's WWW-Authenticate value into the token URL, and refuses
(AnsibleFilterError naming the realm and the rule) where the registry credentials would go over
plain http or to a host that is neither the registry's nor listed in
pytorch_image_registry_token_hosts.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.module_utils._registry import token_url


def registry_token_url(www_authenticate, registry, repository, credentials=False, token_hosts=()):
    """The pull token URL (realm?service=...&scope=repository:<repository>:pull) the challenge names.

    ``registry``: host[:port] the manifest request went to; ``credentials``: whether the registry
    user's password goes with the token request; ``token_hosts``: further hosts allowed to get it.
    """
    try:
        return token_url(www_authenticate, registry, repository, bool(credentials), token_hosts or [])
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """gpufleet.node registry filters."""

    def filters(self):
        return {"registry_token_url": registry_token_url}
