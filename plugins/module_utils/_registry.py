# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Where a registry's pull token may be asked for, and with what (filter ``registry_token_url``).

A registry answers an unauthenticated manifest request with 401 and a challenge such as
``Bearer realm="https://auth.docker.io/token",service="registry.docker.io"``. The realm is
whatever the registry (or anything between it and the controller) chooses to name, so the
registry user's password follows it only over https and only to the registry's own host or to
a token host the inventory lists; an anonymous read sends nothing worth stealing and may follow
any http(s) realm.

The registry's own host is compared by name, not port: a token service beside the registry on
another port (docker_auth on :5001 next to a registry on :5000) is the same operator's machine.
A listed ``host:port`` allows that port only, a listed ``host`` any port.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

TOKEN_HOSTS_VARIABLE = "pytorch_image_registry_token_hosts"

RULE = (
    "registry credentials are sent only over https, and only to the registry's own host or to a token host "
    f"listed in {TOKEN_HOSTS_VARIABLE}"
)

# Token services that belong to a registry but live on another host, allowed without listing.
DEFAULT_TOKEN_HOSTS = {
    "registry-1.docker.io": ("auth.docker.io",),
    "docker.io": ("auth.docker.io",),
    "index.docker.io": ("auth.docker.io",),
}

_DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 9110 section 11: challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(_TOKEN)
# Unquoted values should be tokens; a bare URL (realm=https://...) is read too, up to a comma or space.
_PARAM_RE = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s,\"=][^\s,\"]*))")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_SEPARATORS = " \t,"
_UNQUOTE_RE = re.compile(r"\\(.)")


def _skip(text, pos, chars):
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def parse_challenges(header):
    """The challenges of a WWW-Authenticate value: a list of (scheme in lower case, {param: value}).

    Parameter names are lower case; quoted values are unquoted. Parameters may come in any order,
    several challenges may share one header. Raises ValueError on text that is no challenge.
    """
    text = str(header or "")
    challenges = []
    pos = _skip(text, 0, _SEPARATORS)
    while pos < len(text):
        scheme = _SCHEME_RE.match(text, pos)
        if not scheme:
            raise ValueError(f"cannot read the WWW-Authenticate value {text!r} at {text[pos:]!r}")
        params = {}
        pos = _skip(text, scheme.end(), " \t")
        token68 = None if _PARAM_RE.match(text, pos) else _TOKEN68_RE.match(text, pos)
        if token68 and (token68.end() == len(text) or text[token68.end()] in _SEPARATORS):
            pos = token68.end()
        else:
            while (param := _PARAM_RE.match(text, pos)) is not None:
                name, quoted, plain = param.groups()
                params[name.lower()] = _UNQUOTE_RE.sub(r"\1", quoted) if quoted is not None else plain
                pos = _skip(text, param.end(), " \t")
                if pos < len(text) and text[pos] != ",":
                    raise ValueError(f"cannot read the WWW-Authenticate value {text!r} at {text[pos:]!r}")
                pos = _skip(text, pos, _SEPARATORS)
        challenges.append((scheme.group(0).lower(), params))
        pos = _skip(text, pos, _SEPARATORS)
    return challenges


def _host_port(netloc):
    """(hostname in lower case, port or None) of ``host``, ``host:port`` or ``[v6]:port``."""
    parts = urlsplit("//" + str(netloc).strip())
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{netloc!r} is not a host or host:port") from exc
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        raise ValueError(f"{netloc!r} is not a host or host:port")
    return parts.hostname.lower(), port


def _listed_hosts(token_hosts):
    if not isinstance(token_hosts, (list, tuple)):
        raise ValueError(f"{TOKEN_HOSTS_VARIABLE} must be a list of host or host:port, got {token_hosts!r}")
    listed = []
    for entry in token_hosts:
        if not isinstance(entry, str):
            raise ValueError(f"{TOKEN_HOSTS_VARIABLE} must be a list of host or host:port, got the entry {entry!r}")
        try:
            listed.append(_host_port(entry))
        except ValueError as exc:
            raise ValueError(f"{TOKEN_HOSTS_VARIABLE}: {exc} (write host or host:port, no scheme or path)") from exc
    return listed


def token_url(www_authenticate, registry, repository, credentials, token_hosts=()):
    """The URL to ask for a pull token of ``repository`` at ``registry`` (the host[:port] the manifest
    request went to), from the registry's WWW-Authenticate value.

    ``credentials``: whether the registry user's password goes with the token request. Raises
    ValueError with the reason when the challenge is no Bearer challenge with a realm, or when the
    credentials would go over plain http or to a host that is neither the registry's nor listed
    (``token_hosts``, plus DEFAULT_TOKEN_HOSTS for Docker Hub).
    """
    registry_host, _registry_port = _host_port(registry)
    listed = _listed_hosts(token_hosts)
    header = str(www_authenticate or "").strip()
    if not header:
        raise ValueError(
            f"the registry {registry} asked for authentication (401) without a WWW-Authenticate header; "
            "only a Bearer token challenge (realm=...) can be answered"
        )
    challenges = parse_challenges(header)
    bearer = next((params for scheme, params in challenges if scheme == "bearer"), None)
    if bearer is None:
        schemes = ", ".join(sorted({scheme for scheme, _params in challenges}))
        raise ValueError(
            f"the registry {registry} answered WWW-Authenticate: {header!r} ({schemes}): not a Bearer token "
            "challenge; only a registry that hands out pull tokens (Bearer realm=...) can be locked"
        )
    realm = bearer.get("realm", "")
    if not realm:
        raise ValueError(
            f"the registry {registry} answered WWW-Authenticate: {header!r}: a Bearer challenge without a realm, "
            "so there is no token service to ask"
        )
    parts = urlsplit(realm)
    scheme = parts.scheme.lower()
    try:
        realm_port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        realm_port = None
    if scheme not in _DEFAULT_PORTS or not parts.hostname or realm_port is None or parts.username is not None:
        raise ValueError(
            f"the registry {registry} names the token realm {realm!r}, which is not an http(s) URL of a host "
            "(without user info); refusing to follow it"
        )
    realm_host = parts.hostname.lower()
    if credentials:
        if scheme != "https":
            raise ValueError(
                f"refusing to send the registry credentials to the token realm {realm} that {registry} named: "
                f"it is plain http, even where it is the registry's own host. Rule: {RULE}. Serve the token "
                "service over https, or read anonymously (empty pytorch_image_registry_username)"
            )
        allowed = [(registry_host, None)]
        allowed += [(host, None) for host in DEFAULT_TOKEN_HOSTS.get(registry_host, ())]
        allowed += listed
        if not any(realm_host == host and port in (None, realm_port) for host, port in allowed):
            shown = ", ".join(token_hosts) if listed else "nothing"
            raise ValueError(
                f"refusing to send the registry credentials to the token realm {realm} that {registry} named: "
                f"{realm_host} is neither the registry's own host ({registry_host}) nor listed in "
                f"{TOKEN_HOSTS_VARIABLE} (which lists {shown}). Rule: {RULE}. List {realm_host} there only if "
                "it is this registry's token service"
            )
    # The realm's own query (some services carry an account or client id there) is kept.
    query = [parts.query] if parts.query else []
    if bearer.get("service"):
        query.append("service=" + quote(bearer["service"], safe="/"))
    query.append("scope=" + quote(f"repository:{repository}:pull", safe="/"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(query), ""))
