#!/usr/bin/env bash
# Floor for the Docker stage (roles/docker on Debian 12 with inventories/lab/group_vars):
# the same end state as `site.yml --tags docker` on a fresh lab node, with plain commands.
#   - apt lists fetched only when the node has none (apt_helpers)
#   - docker.io from the OS archive (docker_install_method: distro, no version pin),
#     --no-install-recommends; docker.io, containerd and runc held
#   - /etc/docker/daemon.json as the role renders it (sorted keys, 2-space indent)
#   - no proxy drop-in; dockerd restarted after the daemon.json change (the role's handler,
#     with daemon-reload), enabled and running
# Not done: the role's read-only checks (asserts, package facts, reading daemon.json back).
# Input: BENCH_REGISTRY (host:port of the lab registry, the lab's docker_insecure_registries).
# shellcheck source=bench/floor/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

: "${BENCH_REGISTRY:?set BENCH_REGISTRY (lab registry host:port)}"

# The role's managed keys (roles/docker/vars/main.yml: _docker_daemon_managed) with the lab's
# values; `docker_daemon_json nvidia` adds the toolkit's fragment (runtime and CDI), as the
# toolkit stage merges it. Keys sorted, 2-space indent: the role's daemon_json_render.
docker_daemon_json() {
  local nvidia=${1:-}
  printf '{\n  "exec-opts": [\n    "native.cgroupdriver=systemd"\n  ],\n'
  [[ -z $nvidia ]] || printf '  "features": {\n    "cdi": true\n  },\n'
  printf '  "insecure-registries": [\n    "%s"\n  ],\n' "$BENCH_REGISTRY"
  printf '  "live-restore": true,\n  "log-driver": "json-file",\n'
  printf '  "log-opts": {\n    "max-file": "5",\n    "max-size": "100m"\n  }'
  [[ -z $nvidia ]] || printf ',\n  "runtimes": {\n    "nvidia": {\n      "args": [],\n      "path": "nvidia-container-runtime"\n    }\n  }'
  printf '\n}'
}

docker_stage() {
  step "docker: apt lists" apt_lists
  step "docker: install docker.io" apt_install docker.io
  step "docker: hold docker.io containerd runc" hold docker.io containerd runc
  step "docker: write daemon.json" daemon_json "$(docker_daemon_json "")"
  step "docker: no proxy drop-in" rm -f /etc/systemd/system/docker.service.d/http-proxy.conf
  step "docker: restart dockerd (handler)" restart_docker
  step "docker: enable and start dockerd" systemctl enable --now docker --quiet
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  docker_stage
fi
