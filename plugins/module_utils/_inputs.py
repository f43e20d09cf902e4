# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""Every inventory value the collection's roles and playbooks take, checked for its format.

``problems(values)`` runs on the controller (lookup ``gpufleet.node.inventory_problems``) in the
first play of every playbook, before any node changes. Each problem names the variable, the
value (never a secret's: those show only their length) and what is expected. A check never
passes a value that a template, a unit file or a command line would then have to cope with:
control characters, relative paths, ``..``, words where numbers go, shell text in versions.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from urllib.parse import urlsplit

from ansible_collections.gpufleet.node.plugins.module_utils._container_service import (
    CONTROL_CHARACTERS,
    ServiceSpecError,
    gpu_devices,
    ulimit_args,
)
from ansible_collections.gpufleet.node.plugins.module_utils._container_toolkit import ToolkitPinError, check_pin
from ansible_collections.gpufleet.node.plugins.module_utils._torch_report import (
    PERFORMANCE_CHECKS,
    fingerprint_lock_problems,
)

# Variables whose values never appear in a message.
SECRETS = frozenset({"jupyter_container_token", "pytorch_image_registry_password"})

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
# Debian (epoch:upstream-revision) and EL (version-release) package versions: no spaces, no shell.
_PACKAGE_VERSION = re.compile(r"^([0-9]+:)?[0-9][A-Za-z0-9.+~_^-]*$")
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")
_EXACT_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_LINUX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_REPOSITORY = re.compile(r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)+$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IMAGE = re.compile(
    r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(@sha256:[0-9a-f]{64})?$")
# Docker's sizes (units.RAMInBytes): 512m, 16g, 1.5g, 2GiB.
_SIZE = re.compile(r"^[0-9]+(\.[0-9]+)?[kKmMgGtTpP]?[iI]?[bB]?$")
_CPUS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_JUPYTER_BASE_URL = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
_SSH_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/=]+( .*)?$")
# RSA keys below this size are refused (NIST SP 800-57: 3072 bits for use beyond 2030).
SSH_RSA_MIN_BITS = 3072
_SERIAL = re.compile(r"^([1-9][0-9]*|([1-9][0-9]?|100)%)$")
_LOG_OPT = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_LOG_DRIVER = re.compile(r"^[a-z0-9][a-z0-9_./:-]*$")
_NO_PROXY_ITEM = re.compile(r"^[A-Za-z0-9.*_\[\]:/-]+$")
LOOPBACK = ("127.0.0.1", "::1", "localhost")

# daemon.json keys a dedicated variable sets: the option would fight it on every run.
DAEMON_KEYS_OWNED = {
    "live-restore": "docker_live_restore",
    "icc": "docker_icc",
    "log-driver": "docker_log_driver",
    "log-opts": "docker_log_opts",
    "exec-opts": "docker_cgroup_driver",
    "data-root": "docker_data_root",
    "registry-mirrors": "docker_registry_mirrors",
    "insecure-registries": "docker_insecure_registries",
    "default-runtime": "nvidia_container_toolkit_default_runtime",
    "runtimes": "nvidia_container_toolkit_docker_runtime",
    "features": "nvidia_container_toolkit_nvml_fix (features.cdi)",
}
# Keys dockerd refuses at start next to the flags of its systemd unit (dockerd -H fd://).
DAEMON_KEYS_REFUSED = {"hosts": "docker.service starts dockerd with -H fd://, and dockerd then refuses to start"}


def show(name, value):
    """A value as a message shows it: JSON (control characters escaped), secrets by length only."""
    if name.split("[", 1)[0] in SECRETS:
        return f"(hidden, {len(str(value))} characters)" if value not in (None, "") else "(empty)"
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Checks:
    """Collects problems; each check returns the value when it passed, else None."""

    def __init__(self, values):
        self.values = values
        self.problems = []
        self.writing_lock = False

    def bad(self, name, expected, value=None, shown=True):
        got = f"; got {show(name, value)}" if shown else ""
        self.problems.append(f"{name} must be {expected}{got}")

    def has(self, name):
        return name in self.values

    def get(self, name, default=None):
        return self.values.get(name, default)

    # --- primitives (name: the variable, or a path into it such as ssh_container_users[0].uid)
    def text(self, name, value, allow_empty=True, single_word=False):
        if not isinstance(value, str):
            self.bad(name, "a string", value)
            return None
        if not value and not allow_empty:
            self.bad(name, "set (it is empty)", shown=False)
            return None
        if CONTROL_CHARACTERS.search(value):
            self.bad(name, "one line without control characters (newline, tab, ...)", value)
            return None
        if single_word and re.search(r"\s", value):
            self.bad(name, "one word without whitespace", value)
            return None
        return value

    def pattern(self, name, value, regex, expected, allow_empty=False):
        if allow_empty and value in ("", None):
            return value
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not regex.fullmatch(str(value)):
            self.bad(name, expected, value)
            return None
        return value

    def integer(self, name, value, low=None, high=None, expected=None):
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"^-?[0-9]+$", value.strip()):
            number = int(value)
        if number is None or (low is not None and number < low) or (high is not None and number > high):
            if expected is None:
                expected = "a whole number" + (f" from {low}" if low is not None else "") + (
                    f" to {high}" if high is not None else "")
            self.bad(name, expected, value)
            return None
        return number

    def boolean(self, name, value):
        if not isinstance(value, bool):
            self.bad(name, "true or false", value)
            return None
        return value

    def path(self, name, value, allow_empty=False, allow_root=False, for_volume=False):
        if allow_empty and value == "":
            return value
        if self.text(name, value, allow_empty=False) is None:
            return None
        parts = value.split("/")
        if not value.startswith("/"):
            self.bad(name, "an absolute path (starting with /)", value)
        elif ".." in parts or "." in parts[1:]:
            self.bad(name, "an absolute path without . or .. components", value)
        elif value.rstrip("/") == "" and not allow_root:
            self.bad(name, "a folder below / (not / itself)", value)
        elif for_volume and re.search(r"[:,]", value):
            self.bad(name, "a path without : or , (Docker's volume syntax splits on them)", value)
        else:
            return value
        return None

    def url(self, name, value, schemes=("http", "https"), allow_empty=False):
        if allow_empty and value == "":
            return value
        if self.text(name, value, allow_empty=False) is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            parts = None
        wanted = " or ".join(f"{s}://" for s in schemes)
        if (parts is None or parts.scheme not in schemes or re.search(r"\s", value)
                or (parts.scheme != "file" and not parts.hostname)):
            self.bad(name, f"a URL starting with {wanted} and naming a host", value)
            return None
        return value

    def host_port(self, name, value):
        if not isinstance(value, str):
            self.bad(name, "host[:port] or a network (CIDR)", value)
            return None
        try:
            ipaddress.ip_network(value, strict=False)
            return value
        except ValueError:
            pass
        host, _sep, port = value.rpartition(":") if not value.endswith("]") else (value, "", "")
        if not host:
            host, port = value, ""
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            host_ok = True
        except ValueError:
            host_ok = bool(_HOSTNAME.fullmatch(host))
        if not host_ok or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
            self.bad(name, "host[:port] or a network (CIDR)", value)
            return None
        return value

    def address(self, name, value):
        if value == "localhost":
            return value
        try:
            ipaddress.ip_address(value)
            return value
        except (ValueError, TypeError):
            self.bad(name, "an IP address of the node (127.0.0.1, 0.0.0.0, ::1, ::)", value)
            return None

    def string_list(self, name, value, check, allow_empty=True):
        if not isinstance(value, list):
            self.bad(name, "a list", value)
            return None
        if not value and not allow_empty:
            self.bad(name, "a list with at least one entry", value)
            return None
        for index, item in enumerate(value):
            check(f"{name}[{index}]", item)
        return value

    def mapping(self, name, value):
        if not isinstance(value, dict):
            self.bad(name, "a mapping", value)
            return None
        return value

    def size(self, name, value, allow_empty=True):
        return self.pattern(name, value, _SIZE, "a size such as 512m or 16g" + (" or empty" if allow_empty else ""),
                            allow_empty=allow_empty)

    def cpus(self, name, value):
        if value in ("", None):
            return value
        if not _CPUS.fullmatch(str(value)) or isinstance(value, bool) or float(str(value)) <= 0:
            self.bad(name, "a number of CPUs above 0 (2, 0.5) or empty", value)
            return None
        return value

    def gpus(self, name, value):
        try:
            gpu_devices(value, 10**6)
        except ServiceSpecError:
            self.bad(name, "all, none, a count or a list of GPU indexes/UUIDs", value)
            return None
        return value

    def ulimits(self, name, value):
        if self.mapping(name, value) is None:
            return None
        try:
            ulimit_args(value)
        except ServiceSpecError as err:
            self.problems.append(f"{name}: {err}")
            return None
        return value

    def image(self, name, value, allow_empty=True):
        if allow_empty and value == "":
            return value
        if isinstance(value, str) and _SHA256.fullmatch(value):
            return value
        return self.pattern(name, value, _IMAGE, "an image reference (repository[:tag][@sha256:digest])")

    def volumes(self, name, value, required_target=None, target_name=None):
        if not isinstance(value, list):
            self.bad(name, "a list of {host: /path, container: /path}", value)
            return None
        targets = []
        for index, volume in enumerate(value):
            item = f"{name}[{index}]"
            if not isinstance(volume, dict) or not {"host", "container"} <= set(volume):
                self.bad(item, "a mapping with host and container (and optionally read_only)", volume)
                continue
            unknown = sorted(set(volume) - {"host", "container", "read_only"})
            if unknown:
                self.bad(item, "host, container and read_only only", unknown)
            self.path(f"{item}.host", volume["host"], for_volume=True)
            self.path(f"{item}.container", volume["container"], for_volume=True)
            if volume.get("read_only") is not None:
                self.boolean(f"{item}.read_only", volume["read_only"])
            targets.append(volume["container"])
        if len(set(map(str, targets))) != len(targets):
            self.bad(name, "a list that mounts each container path once", targets)
        if required_target is not None and targets.count(required_target) != 1:
            self.problems.append(f"{name} must mount exactly one folder at {target_name} ({required_target})")
        return value


def _check_docker(c):
    v = c.get
    c.pattern("docker_ce_version", v("docker_ce_version"), _EXACT_VERSION, "an exact version like 28.5.2")
    c.pattern("docker_containerd_version", v("docker_containerd_version"), _EXACT_VERSION,
              "an exact version like 1.7.28")
    c.url("docker_repo_url", v("docker_repo_url"), schemes=("http", "https", "file"))
    c.url("docker_repo_gpg_key_url", v("docker_repo_gpg_key_url"), schemes=("http", "https", "file"), allow_empty=True)
    for name in ("docker_repo_extra_packages", "docker_distro_packages"):
        c.string_list(name, v(name), lambda n, x: c.pattern(n, x, _PACKAGE_NAME, "a package name"))
    c.pattern("docker_distro_version", v("docker_distro_version"), _PACKAGE_VERSION,
              "a package version (20.10.24+dfsg1-1+deb12u1) or empty", allow_empty=True)
    _check_docker_logs(c)
    _check_docker_network(c)
    _check_docker_daemon(c)


def _check_docker_logs(c):
    v = c.get
    driver = c.pattern("docker_log_driver", v("docker_log_driver"), _LOG_DRIVER,
                       "a log driver name (json-file, local, journald)")
    opts = c.mapping("docker_log_opts", v("docker_log_opts"))
    for key, value in (opts or {}).items():
        item = f"docker_log_opts[{key!r}]"
        if not _LOG_OPT.fullmatch(str(key)):
            c.bad(item, "named like max-size", key)
        elif isinstance(value, (dict, list)) or value is None:
            c.bad(item, "a string or a number", value)
        elif driver in ("json-file", "local") and key == "max-size":
            c.size(item, str(value), allow_empty=False)
        elif driver in ("json-file", "local") and key == "max-file":
            c.integer(item, value, low=1, expected="a number of files above 0")
        elif isinstance(value, str):
            c.text(item, value)


def _check_docker_network(c):
    v = c.get
    c.path("docker_data_root", v("docker_data_root"), allow_empty=True)
    c.string_list("docker_registry_mirrors", v("docker_registry_mirrors"), c.url)
    c.string_list("docker_insecure_registries", v("docker_insecure_registries"), c.host_port)
    for name in ("docker_http_proxy", "docker_https_proxy"):
        c.url(name, v(name), schemes=("http", "https", "socks5", "socks5h"), allow_empty=True)
    no_proxy = c.text("docker_no_proxy", v("docker_no_proxy"))
    if no_proxy:
        items = [item.strip() for item in no_proxy.split(",")]
        if not all(item == "" or _NO_PROXY_ITEM.fullmatch(item) for item in items):
            c.bad("docker_no_proxy", "a comma-separated list of hosts, domains (.example.internal) and networks",
                  no_proxy)
    c.string_list("docker_users", v("docker_users"), lambda n, x: c.pattern(n, x, _LINUX_NAME, "a Linux user name"))


def _check_docker_daemon(c):
    v = c.get
    options = c.mapping("docker_daemon_options", v("docker_daemon_options")) or {}
    fragments = c.mapping("docker_daemon_fragments", v("docker_daemon_fragments")) or {}
    layers = [("docker_daemon_options", options)]
    for key, fragment in fragments.items():
        if c.mapping(f"docker_daemon_fragments[{key!r}]", fragment) is not None:
            layers.append((f"docker_daemon_fragments[{key!r}]", fragment))
    for name, layer in layers:
        for key in layer:
            if key in DAEMON_KEYS_OWNED:
                c.problems.append(f"{name} sets {key!r}, which {DAEMON_KEYS_OWNED[key]} sets: use that variable")
            elif key in DAEMON_KEYS_REFUSED:
                c.problems.append(f"{name} sets {key!r}: {DAEMON_KEYS_REFUSED[key]}")


def _check_nvidia_driver(c):
    v = c.get
    branch = c.pattern("nvidia_driver_branch", v("nvidia_driver_branch"), re.compile(r"^[1-9][0-9]{2}$"),
                       "a driver branch: the major version as three digits, like \"580\"")
    version = c.pattern("nvidia_driver_version", v("nvidia_driver_version"), _PACKAGE_VERSION,
                        "a package version (580.95.05-0ubuntu0.24.04.2) or empty", allow_empty=True)
    if branch is not None and version and not re.sub(r"^[0-9]+:", "", str(version)).startswith(f"{branch}."):
        c.problems.append(f"nvidia_driver_version {version} is not of branch {branch} (nvidia_driver_branch): "
                          f"set both to the same driver")
    c.url("nvidia_driver_cuda_repo_url", v("nvidia_driver_cuda_repo_url"), schemes=("http", "https", "file"))
    c.url("nvidia_driver_cuda_repo_key_url", v("nvidia_driver_cuda_repo_key_url"), schemes=("http", "https", "file"),
          allow_empty=True)
    c.url("nvidia_driver_debian_mirror", v("nvidia_driver_debian_mirror"))
    c.url("nvidia_driver_debian_security_mirror", v("nvidia_driver_debian_security_mirror"))
    c.integer("nvidia_driver_reboot_timeout", v("nvidia_driver_reboot_timeout"), low=60,
              expected="a number of seconds, at least 60")


def _check_toolkit(c):
    v = c.get
    try:
        check_pin(v("nvidia_container_toolkit_version"))   # the role's own parser of the pin
    except ToolkitPinError as err:
        c.problems.append(f"{err} (never latest)")
    c.url("nvidia_container_toolkit_repo_url", v("nvidia_container_toolkit_repo_url"),
          schemes=("http", "https", "file"))
    c.url("nvidia_container_toolkit_repo_key_url", v("nvidia_container_toolkit_repo_key_url"),
          schemes=("http", "https", "file"), allow_empty=True)
    spec = c.path("nvidia_container_toolkit_cdi_spec", v("nvidia_container_toolkit_cdi_spec"))
    if spec and not re.fullmatch(r"^/(etc/cdi|var/run/cdi)/[^/]+\.(yaml|json)$", spec):
        c.bad("nvidia_container_toolkit_cdi_spec",
              "a .yaml or .json file in /etc/cdi or /var/run/cdi (where Docker looks for CDI specs)", spec)
    c.image("nvidia_container_toolkit_test_image", v("nvidia_container_toolkit_test_image"))


def _check_pytorch_image(c):
    v = c.get
    source = v("pytorch_image_source")
    c.pattern("pytorch_image_repository", v("pytorch_image_repository"), _REPOSITORY,
              "registry/name without tag or digest (docker.io/pytorch/pytorch)")
    c.pattern("pytorch_image_tag", v("pytorch_image_tag"), _TAG, "an image tag (2.9.1-cuda12.8-cudnn9-runtime)")
    if source != "archive":
        c.pattern("pytorch_image_digest", v("pytorch_image_digest"), _SHA256,
                  "sha256: followed by 64 hex digits (the pin: playbooks/lock.yml writes it into the lock)",
                  allow_empty=c.writing_lock)
    else:
        c.pattern("pytorch_image_id", v("pytorch_image_id"), _SHA256,
                  "sha256: followed by 64 hex digits (the pin for archives)")
        src, url = v("pytorch_image_archive_src", ""), v("pytorch_image_archive_url", "")
        if (str(src) != "") == (str(url) != ""):
            c.problems.append("set exactly one of pytorch_image_archive_src and pytorch_image_archive_url "
                              "(pytorch_image_source: archive)")
    if source != "archive":
        c.pattern("pytorch_image_id", v("pytorch_image_id"), _SHA256, "sha256: followed by 64 hex digits or empty",
                  allow_empty=True)
    c.text("pytorch_image_registry_username", v("pytorch_image_registry_username"), single_word=True)
    password = v("pytorch_image_registry_password")
    if not isinstance(password, str) or CONTROL_CHARACTERS.search(password):
        c.bad("pytorch_image_registry_password", "a string without control characters", shown=False)
    if v("pytorch_image_registry_password") and not v("pytorch_image_registry_username"):
        c.problems.append("pytorch_image_registry_password is set without pytorch_image_registry_username")
    # A file on the controller: relative to the playbook, or absolute.
    src = c.text("pytorch_image_archive_src", v("pytorch_image_archive_src"))
    if src and ".." in src.split("/"):
        c.bad("pytorch_image_archive_src", "a file path without .. components", src)
    c.url("pytorch_image_archive_url", v("pytorch_image_archive_url"), schemes=("http", "https", "file"),
          allow_empty=True)
    c.pattern("pytorch_image_archive_checksum", v("pytorch_image_archive_checksum"), _SHA256,
              "sha256: followed by 64 hex digits or empty", allow_empty=True)
    c.path("pytorch_image_archive_dir", v("pytorch_image_archive_dir"))
    c.path("pytorch_image_build_dir", v("pytorch_image_build_dir"))
    c.pattern("pytorch_image_build_repository", v("pytorch_image_build_repository"), _REPOSITORY,
              "registry/name without tag or digest")
    c.pattern("pytorch_image_build_jupyterlab_version", v("pytorch_image_build_jupyterlab_version"),
              re.compile(r"^[0-9]+(\.[0-9]+)*([a-z]+[0-9]+)?$"), "a version (JupyterLab 4.6.6)")
    c.pattern("pytorch_image_build_openssh_version", v("pytorch_image_build_openssh_version"), _PACKAGE_VERSION,
              "an apt version of openssh-server or empty", allow_empty=True)
    c.url("pytorch_image_build_pip_index_url", v("pytorch_image_build_pip_index_url"), allow_empty=True)
    if v("pytorch_image_build_pip_trusted_host", "") != "":
        c.host_port("pytorch_image_build_pip_trusted_host", v("pytorch_image_build_pip_trusted_host"))
    if c.has("pytorch_image_registry_token_hosts"):
        c.string_list("pytorch_image_registry_token_hosts", v("pytorch_image_registry_token_hosts"), c.host_port)


def _check_service(c, role, home_var):
    """What jupyter_container and ssh_container share: name, address, port, ids, mounts, limits."""
    def v(name):
        return c.get(f"{role}_{name}")

    c.pattern(f"{role}_name", v("name"), _CONTAINER_NAME,
              "a container and unit name (letters, digits, _ . -, starting with a letter or digit)")
    c.image(f"{role}_image", v("image"))
    c.address(f"{role}_listen", v("listen"))
    c.integer(f"{role}_port", v("port"), low=1, high=65535, expected="a port from 1 to 65535")
    c.volumes(f"{role}_volumes", v("volumes"), required_target=v(home_var), target_name=f"{role}_{home_var}")
    c.path(f"{role}_{home_var}", v(home_var))
    c.gpus(f"{role}_gpus", v("gpus"))
    c.size(f"{role}_shm_size", v("shm_size"), allow_empty=False)
    c.ulimits(f"{role}_ulimits", v("ulimits"))
    c.size(f"{role}_memory", v("memory"))
    c.cpus(f"{role}_cpus", v("cpus"))
    c.path(f"{role}_config_dir", v("config_dir"))


def _check_jupyter(c):
    v = c.get
    _check_service(c, "jupyter_container", "root_dir")
    minimum = c.integer("jupyter_container_token_min_length", v("jupyter_container_token_min_length"), low=16,
                        expected="a length of at least 16")
    token = v("jupyter_container_token")
    if not isinstance(token, str):
        c.bad("jupyter_container_token", "a string (from Ansible Vault)", shown=False)
    elif token == "":
        c.problems.append(f"jupyter_container_token is empty: set it from Ansible Vault, at least "
                          f"{minimum or 32} characters")
    elif re.search(r"\s", token) or CONTROL_CHARACTERS.search(token):
        c.bad("jupyter_container_token", "one word without whitespace", token)
    elif minimum and len(token) < minimum:
        c.bad("jupyter_container_token", f"at least {minimum} characters (jupyter_container_token_min_length)", token)
    c.pattern("jupyter_container_base_url", v("jupyter_container_base_url"), _JUPYTER_BASE_URL,
              "a path that starts and ends with / (like /jupyter/)")
    for name in ("jupyter_container_tls_cert", "jupyter_container_tls_key"):
        c.path(name, v(name), allow_empty=True)
    if (v("jupyter_container_tls_cert") != "") != (v("jupyter_container_tls_key") != ""):
        c.problems.append("set both jupyter_container_tls_cert and jupyter_container_tls_key, or neither")
    if v("jupyter_container_listen") not in LOOPBACK and not v("jupyter_container_tls_cert"):
        c.problems.append(f"jupyter_container_listen is {show('', v('jupyter_container_listen'))}: Jupyter is "
                          "published beyond loopback only with TLS (set jupyter_container_tls_cert and "
                          "jupyter_container_tls_key)")
    for name in ("jupyter_container_uid", "jupyter_container_gid"):
        c.integer(name, v(name), low=1, high=2**31 - 1, expected="a number above 0 (Jupyter never runs as root)")


def _check_ssh(c):
    v = c.get
    _check_service(c, "ssh_container", "home")
    c.integer("ssh_container_gid", v("ssh_container_gid"), low=1, high=2**31 - 1, expected="a group id above 0")
    c.pattern("ssh_container_group", v("ssh_container_group"), _LINUX_NAME, "a Linux group name")
    users = v("ssh_container_users")
    if not isinstance(users, list):
        c.bad("ssh_container_users", "a list of users (name, uid, authorized_keys)", users)
        return
    if not users and v("ssh_container_enabled") is not False:
        c.problems.append("ssh_container_users is empty: list who may log in (name, uid, authorized_keys), "
                          "or set ssh_container_enabled: false")
    names, uids = [], []
    for index, user in enumerate(users):
        item = f"ssh_container_users[{index}]"
        if not isinstance(user, dict):
            c.bad(item, "a mapping with name, uid and authorized_keys", user)
            continue
        unknown = sorted(set(user) - {"name", "uid", "gid", "authorized_keys"})
        if unknown:
            c.bad(item, "name, uid, gid and authorized_keys only", unknown)
        name = user.get("name")
        if c.pattern(f"{item}.name", name, _LINUX_NAME, "a Linux user name (lower case, digits, _ and -)") and \
                name == "root":
            c.bad(f"{item}.name", "a user other than root (root never logs in)", name)
        names.append(name)
        uids.append(c.integer(f"{item}.uid", user.get("uid"), low=1, high=2**31 - 1,
                              expected="a number above 0 (root is never a login)"))
        if user.get("gid") is not None:
            c.integer(f"{item}.gid", user["gid"], low=1, high=2**31 - 1, expected="a number above 0")
        keys = user.get("authorized_keys")
        if not isinstance(keys, list) or not keys:
            c.bad(f"{item}.authorized_keys", "a list of OpenSSH public keys (a user without keys could never log in)",
                  keys)
            continue
        _check_ssh_keys(c, f"{item}.authorized_keys", keys)
    if len(set(map(str, names))) != len(names):
        c.bad("ssh_container_users", "a list that names each user once", names)
    known = [uid for uid in uids if uid is not None]
    if len(set(known)) != len(known):
        c.bad("ssh_container_users", "a list that gives each user their own uid", known)


def _check_ssh_keys(c, name, keys):
    for key_index, key in enumerate(keys):
        line = key.strip() if isinstance(key, str) else None
        if line is None or CONTROL_CHARACTERS.search(line) or not _SSH_KEY.fullmatch(line):
            c.bad(f"{name}[{key_index}]", "an OpenSSH public key line (ssh-ed25519 AAAA... comment)", key)
            continue
        weak = ssh_key_weakness(line)
        if weak:
            c.bad(f"{name}[{key_index}]", weak, line.split(" ", 2)[0])


def _ssh_fields(blob: bytes) -> list[bytes]:
    """The length-prefixed fields of an OpenSSH public key blob (RFC 4253 section 6.6)."""
    fields, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ValueError("truncated")
        size = int.from_bytes(blob[at:at + 4], "big")
        at += 4
        if at + size > len(blob):
            raise ValueError("truncated")
        fields.append(blob[at:at + size])
        at += size
    return fields


def ssh_key_weakness(line: str) -> str:
    """What is wrong with a well-formed public key line ('' when nothing): a DSA key, an RSA key
    under SSH_RSA_MIN_BITS, or a key whose data is not the type its line names."""
    kind, data = line.split(" ", 2)[:2]
    if kind == "ssh-dss":
        return "an Ed25519, ECDSA or RSA key (DSA keys are refused by OpenSSH since 7.0 and removed in 9.8)"
    try:
        fields = _ssh_fields(base64.b64decode(data, validate=True))
    except (ValueError, binascii.Error):
        return "an OpenSSH public key whose data is valid base64 of a key (copy the whole .pub line)"
    if not fields or fields[0] != kind.encode():
        return f"a key whose data is the {kind} key its line names (copy the whole .pub line)"
    if kind == "ssh-rsa":
        bits = int.from_bytes(fields[2], "big").bit_length() if len(fields) >= 3 else 0
        if bits < SSH_RSA_MIN_BITS:
            return (f"an RSA key of at least {SSH_RSA_MIN_BITS} bits (this one has {bits}; "
                    "make one with ssh-keygen -t ed25519, or -t rsa -b 4096)")
    return ""


def _check_gpu_verify(c):
    v = c.get
    c.image("gpu_verify_image", v("gpu_verify_image"))
    c.path("gpu_verify_python", v("gpu_verify_python"), allow_empty=True)
    c.gpus("gpu_verify_gpus", v("gpu_verify_gpus"))
    c.string_list("gpu_verify_docker_args", v("gpu_verify_docker_args"), lambda n, x: c.text(n, x, allow_empty=False))
    c.integer("gpu_verify_timeout", v("gpu_verify_timeout"), low=1, expected="a number of seconds above 0")
    c.string_list("gpu_verify_services", v("gpu_verify_services"),
                  lambda n, x: c.pattern(n, x, _UNIT_NAME, "a systemd unit name"))
    c.path("gpu_verify_report_dir", v("gpu_verify_report_dir"))
    for problem in lock_format_problems(v("gpu_verify_lock")):
        c.problems.append(problem)


def lock_format_problems(lock):
    """The lock's own fields (what playbooks/lock.yml writes, and what may be added by hand)."""
    if lock in (None, {}):
        return []
    if not isinstance(lock, dict):
        return [f"gpu_verify_lock must be a mapping (playbooks/lock.yml writes it); got {show('', lock)}"]
    c = _Checks(lock)
    known = {"image_repository", "image_tag", "image_digest", "image_id", "driver_version", "toolkit_version",
             "torch", "cuda", "cudnn", "min_gpus", "min_performance", "reference", "fingerprints"}
    for key in sorted(set(lock) - known, key=str):
        c.problems.append(f"gpu_verify_lock has an unknown key {key!r} (keys: {', '.join(sorted(known))})")
    _lock_image(c, lock)
    _lock_versions(c, lock)
    _lock_gpus(c, lock)
    c.problems += fingerprint_lock_problems(lock.get("fingerprints"))
    return c.problems


def _set(lock, key):
    """A key the lock sets: an empty value says nothing (pins left empty follow the lock's)."""
    return lock.get(key) not in ("", None)


def _lock_image(c, lock):
    if _set(lock, "image_repository"):
        c.pattern("gpu_verify_lock.image_repository", lock["image_repository"], _REPOSITORY, "registry/name")
    if _set(lock, "image_tag"):
        c.pattern("gpu_verify_lock.image_tag", lock["image_tag"], _TAG, "an image tag")
    for key in ("image_digest", "image_id"):
        if _set(lock, key):
            c.pattern(f"gpu_verify_lock.{key}", lock[key], _SHA256, "sha256: followed by 64 hex digits")


def _lock_versions(c, lock):
    if _set(lock, "driver_version"):
        c.pattern("gpu_verify_lock.driver_version", lock["driver_version"], re.compile(r"^[0-9]+(\.[0-9]+){1,2}$"),
                  "the loaded driver's version, like 580.95.05")
    if _set(lock, "toolkit_version"):
        c.pattern("gpu_verify_lock.toolkit_version", lock["toolkit_version"],
                  re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.~+]+)?$"), "a toolkit version like 1.18.0-1")
    for key in ("torch", "cuda"):
        if _set(lock, key):
            c.pattern(f"gpu_verify_lock.{key}", lock[key], re.compile(r"^[0-9]+(\.[0-9]+)*([+.a-z0-9]*)$"),
                      "a version string (2.9.1+cu128, \"12.8\")")
    if _set(lock, "cudnn"):
        c.integer("gpu_verify_lock.cudnn", lock["cudnn"], low=1, expected="cuDNN's version number (91002)")


def _lock_gpus(c, lock):
    if "min_gpus" in lock:
        gpus = lock["min_gpus"]
        # per inventory group, as gpu_verify compares it (a host in several: the largest)
        if not isinstance(gpus, dict):
            c.bad("gpu_verify_lock.min_gpus", "a mapping of inventory group to a number of GPUs ({hgx: 8})", gpus)
        else:
            for group, count in gpus.items():
                c.integer(f"gpu_verify_lock.min_gpus[{group!r}]", count, low=0, expected="a number of GPUs")
    if "min_performance" in lock:
        value = lock["min_performance"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            c.bad("gpu_verify_lock.min_performance", "a fraction above 0 and at most 1 (0.9)", value)
    if "reference" in lock:
        reference = lock["reference"]
        if not isinstance(reference, dict):
            c.bad("gpu_verify_lock.reference", "a mapping of GPU model to {bf16_tflops, copy_tbps}", reference)
        else:
            for model, figures in reference.items():
                ok = isinstance(figures, dict) and figures and set(figures) <= set(PERFORMANCE_CHECKS.values()) and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in figures.values())
                if not ok:
                    c.bad(f"gpu_verify_lock.reference[{model!r}]",
                          "numbers above 0 under " + ", ".join(sorted(PERFORMANCE_CHECKS.values())), figures)


def _check_node_drain(c):
    v = c.get
    method = v("node_drain_method")
    c.text("node_drain_name", v("node_drain_name"), allow_empty=False, single_word=True)
    delegate = v("node_drain_delegate")
    if c.text("node_drain_delegate", delegate, single_word=True) and c.has("__groups_all") and \
            delegate not in c.get("__groups_all") and delegate not in LOOPBACK:
        c.bad("node_drain_delegate", "a host of the inventory (or empty: the controller)", delegate)
    c.integer("node_drain_timeout", v("node_drain_timeout"), low=1, expected="a number of seconds above 0")
    c.text("node_drain_reason", v("node_drain_reason"), allow_empty=False)
    for name in ("node_drain_command", "node_drain_undrain_command"):
        c.string_list(name, v(name), lambda n, x: c.text(n, x, allow_empty=False))
    if method == "command":
        for name in ("node_drain_command", "node_drain_undrain_command"):
            if v(name) == []:
                c.problems.append(f"node_drain_method command needs {name} (an argv list)")


def _check_run(c):
    """Run variables (extra vars): the batches of site.yml and upgrade_driver.yml."""
    if c.has("gpufleet_serial"):
        serial = c.get("gpufleet_serial")
        items = serial if isinstance(serial, list) else [serial]
        if not items or any(isinstance(x, bool) or not _SERIAL.fullmatch(str(x)) for x in items):
            c.bad("gpufleet_serial", "a number of nodes (5), a percentage (25%) or a list of them ([1, 10%, 100%])",
                  serial)
    if c.has("gpufleet_max_fail_percentage"):
        c.integer("gpufleet_max_fail_percentage", c.get("gpufleet_max_fail_percentage"), low=0, high=100,
                  expected="a whole number from 0 to 100")
    if c.has("gpufleet_upgrade_serial"):
        c.integer("gpufleet_upgrade_serial", c.get("gpufleet_upgrade_serial"), low=1,
                  expected="a number of nodes upgraded at a time (default 1)")
    if c.has("gpufleet_upgrade_toolkit"):
        c.boolean("gpufleet_upgrade_toolkit", c.get("gpufleet_upgrade_toolkit"))


def _check_node(c):
    """Values that conflict across roles on one node."""
    v = c.get
    ports = {}
    for role in ("jupyter_container", "ssh_container"):
        if v(f"{role}_enabled", True) is not False and f"{role}_port" in c.values:
            ports.setdefault(str(v(f"{role}_port")), []).append(f"{role}_port")
    for port, names in sorted(ports.items()):
        if len(names) > 1:
            c.problems.append(f"{' and '.join(names)} are both {port}: two services cannot listen on one port")
    # The node's own sshd: 22, or the port Ansible reaches it on.
    taken = {"22", str(v("__ansible_port") if v("__ansible_port") is not None else 22)}
    if v("ssh_container_enabled", True) is not False and str(v("ssh_container_port")) in taken and \
            v("ssh_container_listen") not in LOOPBACK:
        c.problems.append(f"ssh_container_port is {v('ssh_container_port')}, the port of the node's own sshd (22, or "
                          "the one Ansible reaches it on): pick another port (default 2222)")


ROLE_CHECKS = {
    "docker": _check_docker,
    "nvidia_driver": _check_nvidia_driver,
    "nvidia_container_toolkit": _check_toolkit,
    "pytorch_image": _check_pytorch_image,
    "jupyter_container": _check_jupyter,
    "ssh_container": _check_ssh,
    "gpu_verify": _check_gpu_verify,
    "node_drain": _check_node_drain,
}
ROLES = tuple(ROLE_CHECKS)


def problems(values: dict, roles=ROLES, writing_lock=False) -> list[str]:
    """Every problem with ``values`` (each variable's value as the host would see it).

    ``roles``: the roles whose variables are checked; the run variables and the checks across
    roles are made when every role is. Services switched off (``<role>_enabled: false``) are not
    checked beyond the switch. ``writing_lock``: playbooks/lock.yml is about to write the pin, so an
    empty pytorch_image_digest is not a problem yet."""
    c = _Checks(dict(values))
    c.writing_lock = writing_lock
    for role in roles:
        if values.get(f"{role}_enabled", True) is False:
            continue
        try:
            ROLE_CHECKS[role](c)
        except (TypeError, AttributeError, KeyError, ValueError) as err:  # a shape no check expected
            c.problems.append(f"{role}: a variable has a shape the role cannot use ({err})")
    if tuple(roles) == ROLES:
        _check_run(c)
        _check_node(c)
    return list(dict.fromkeys(c.problems))


def problems_report(problems_by_host: dict, hosts_all: list) -> str:
    """Each distinct problem once, naming its hosts ('every host' when all of them): a group_vars
    mistake on a fleet of 200 nodes is one line, not 200. '' when there is none."""
    hosts_of = {}
    for host, found in problems_by_host.items():
        for problem in found or []:
            hosts_of.setdefault(problem, []).append(host)
    if not hosts_of:
        return ""
    every = set(hosts_all or problems_by_host)
    lines = []
    for problem, hosts in hosts_of.items():
        where = "every host" if set(hosts) >= every else ", ".join(sorted(hosts)[:5]) + (
            f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
        lines.append(f"- {problem} ({where})")
    return f"{len(hosts_of)} problem(s) in the inventory, nothing was changed:\n" + "\n".join(lines)
