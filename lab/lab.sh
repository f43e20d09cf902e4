#!/usr/bin/env bash
# Offline test lab for the gpufleet.node collection: a Docker engine, systemd "nodes" in
# containers, a registry and a static web server on the docker0 bridge, and the generated
# inventory inventories/lab/hosts.yml. See lab/README.md. Every subcommand is idempotent.
set -euo pipefail

LAB_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$LAB_DIR/.." && pwd)

STATE_DIR=/var/lib/gpufleet-lab
RUN_DIR=/run/gpufleet-lab
LOG_DIR=/var/log/gpufleet-lab
WWW_DIR=$STATE_DIR/www
GNUPG_DIR=$STATE_DIR/gnupg

LAB_LABEL=gpufleet.lab=1
# Node images, one per Debian release the collection supports: gpufleet-lab/node:<suite>.
NODE_SUITES=(bookworm trixie)
NODE_IMAGE_REPO=gpufleet-lab/node
BUSYBOX_IMAGE=gpufleet-lab/busybox:1
BUSYBOX_REPO=lab/busybox
BUSYBOX_TAG=1
NODE_PREFIX=gpufleet-lab-node
REGISTRY_PORT=5000
WWW_PORT=8088
RELAY_PORT=5000 # loopback relay, used only when the host dockerd does not trust the registry
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
KEY_UID='gpufleet lab archive key (stand-in, lab only) <lab-archive@gpufleet.invalid>'
INVENTORY=$REPO_ROOT/inventories/lab/hosts.yml
# The 28.x CLI in /usr/local/bin also talks to the 20.10 daemon, but the lab pins the CLI that
# ships with the daemon so the script does not depend on what else is in PATH.
DOCKER=${LAB_DOCKER:-/usr/bin/docker}
APT_PACKAGES=(docker.io debootstrap docker-registry gnupg busybox-static python3-venv curl openssh-client)
NODE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,gnupg
# Units that fail or make no sense in a container (no udev, no consoles, no kernel modules,
# kernel filesystems it may not mount) and apt timers that would race roles for the dpkg lock.
NODE_MASKED_UNITS=(
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
  systemd-udev-trigger.service systemd-udev-settle.service
  getty.target getty@.service serial-getty@.service console-getty.service
  systemd-remount-fs.service systemd-modules-load.service systemd-firstboot.service
  kmod-static-nodes.service proc-sys-fs-binfmt_misc.automount systemd-binfmt.service
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
  apt-daily.timer apt-daily-upgrade.timer
)

# The one place that says how a lab node container runs (systemd as PID 1 without
# --privileged, which this sandbox refuses). `lab.sh node-flags` prints them one per line.
NODE_FLAGS=(
  --cap-add=SYS_ADMIN
  --cap-add=NET_ADMIN
  --cap-add=SYS_PTRACE
  --cap-add=MKNOD
  --security-opt=seccomp=unconfined
  --security-opt=apparmor=unconfined
  --cgroupns=host
  # the NVIDIA character devices (major 195), as a GPU host's own cgroup allows them: the
  # node's Docker can then hand the lab's STAND-IN GPU (lab/standin/gpu/) to its containers
  "--device-cgroup-rule=c 195:* rwm"
  --volume=/sys/fs/cgroup:/sys/fs/cgroup:rw
  --tmpfs=/run
  --tmpfs=/run/lock
  --volume=/var/lib/docker
  "--label=$LAB_LABEL"
)
NODE_COMMAND=/lib/systemd/systemd

log() { printf 'lab: %s\n' "$*"; }
die() {
  printf 'lab: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: lab/lab.sh SUBCOMMAND
  prereqs     install host packages, the controller venv (.venv), start dockerd
  image       build $NODE_IMAGE_REPO:{${NODE_SUITES[*]// /,}} and $BUSYBOX_IMAGE, push the latter to the lab registry
  registry    start the registry (:$REGISTRY_PORT) and web server (:$WWW_PORT) on docker0, build standin-repos
  standin-repos  build the signed STAND-IN for NVIDIA's container-toolkit apt repo under www/
  standin-image  build the STAND-IN pytorch images: the workbench (push it to the registry, save it
              under www/images/) and the runtime shaped like the official image (push it), with
              the STAND-IN apt repository (www/apt-standin/) and PyPI index (www/pypi/) its builds use
  up          prereqs + image + registry + LAB_NODES nodes (default 2) of the releases in
              LAB_NODE_SUITES (default bookworm; "bookworm trixie" alternates) + inventory
  down        remove lab containers, daemons, inventory; LAB_PURGE=1 also images, state, dockerd
  status      show what runs
  node-flags  print the docker run flags of a node, one per line
  node-image SUITE     the image for a node that should start with the NVIDIA driver installed:
              $NODE_IMAGE_REPO:SUITE-nvidia when Molecule's nvidia_driver scenario committed it from the
              current inputs (driver-inputs), else the plain $NODE_IMAGE_REPO:SUITE
  driver-inputs SUITE  hash of what that committed image depends on (roles, plugins, lab inventory, base image)
  env         print GPUFLEET_LAB_REGISTRY=... and GPUFLEET_LAB_WWW=... for eval, and the stand-in
              images' GPUFLEET_LAB_{WORKBENCH,RUNTIME}_{DIGEST,ID}=... once standin-image has run
EOF
}

# --- helpers -----------------------------------------------------------------------------

lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/lock"
  flock -w 900 9 || die "another lab.sh holds $RUN_DIR/lock"
}

docker_ok() { [[ -x $DOCKER ]] && "$DOCKER" info >/dev/null 2>&1; }

need_docker() { docker_ok || die "docker does not answer; run: lab/lab.sh prereqs"; }

# pid from a pidfile, only when that process is alive and its command line matches $2.
pid_of() {
  local file=$1 pattern=$2 pid
  [[ -r $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  printf '%s\n' "$pid"
}

# Start a daemon detached from this script (own session, no lock fd), log and pidfile by name.
start_daemon() {
  local name=$1
  shift
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  nohup setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  printf '%s\n' "$!" >"$RUN_DIR/$name.pid"
}

stop_daemon() {
  local name=$1 pattern=$2 pid i
  if pid=$(pid_of "$RUN_DIR/$name.pid" "$pattern"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
      [[ -e /proc/$pid ]] || break
      sleep 0.5
    done
    if [[ -e /proc/$pid ]]; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    log "$name: stopped (pid $pid)"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

http_ok() { curl -fsS -o /dev/null --max-time 3 "$1" 2>/dev/null; }

bridge_cidr() {
  { ip -4 -o addr show dev docker0 2>/dev/null || true; } | awk '{print $4; exit}'
}

bridge_ip() {
  local cidr
  cidr=$(bridge_cidr)
  [[ -n $cidr ]] || die "no IPv4 address on docker0 (is dockerd running?)"
  printf '%s\n' "${cidr%/*}"
}

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

python_bin() {
  if [[ -x /usr/bin/python3 ]]; then echo /usr/bin/python3; else command -v python3; fi
}

# Write $1 from stdin only when the content differs, so re-runs change nothing.
write_if_changed() {
  local dest=$1 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    return 1
  fi
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dest"
}

# --- prereqs -----------------------------------------------------------------------------

prereq_packages() {
  local pkg missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "prereqs: host packages present"
    return
  fi
  log "prereqs: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

prereq_venv() {
  local venv=$REPO_ROOT/.venv req=$REPO_ROOT/requirements.txt want stamp
  stamp=$venv/.gpufleet-lab-requirements.sha256
  if [[ ! -f $req ]]; then
    log "prereqs: no requirements.txt, skipping .venv"
    return
  fi
  want=$(sha256sum "$req" | awk '{print $1}')
  if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$want" ]]; then
    log "prereqs: .venv matches requirements.txt"
    return
  fi
  if [[ ! -x $venv/bin/python ]]; then
    log "prereqs: creating .venv"
    "${LAB_PYTHON:-python3}" -m venv "$venv"
  fi
  log "prereqs: installing requirements.txt into .venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  printf '%s\n' "$want" >"$stamp"
}

prereq_dockerd() {
  local pid dockerd cidr i
  if docker_ok; then
    log "prereqs: dockerd answering"
    return
  fi
  [[ -x $DOCKER ]] || die "$DOCKER missing; run: lab/lab.sh prereqs"
  if ! pid=$(pid_of "$RUN_DIR/dockerd.pid" dockerd); then
    dockerd=$(command -v dockerd || true)
    [[ -n $dockerd ]] || die "dockerd not found (package docker.io)"
    # Trust the bridge subnet the registry will live on (default docker0 subnet until the
    # bridge exists), so the host daemon can push to it over plain HTTP.
    cidr=$(bridge_cidr)
    cidr=${cidr:-172.17.0.0/16}
    log "prereqs: starting dockerd (log $LOG_DIR/dockerd.log)"
    start_daemon dockerd "$dockerd" --insecure-registry="$cidr"
    pid=$(<"$RUN_DIR/dockerd.pid")
  fi
  for ((i = 0; i < 120; i++)); do
    docker_ok && {
      log "prereqs: dockerd answering (pid $pid)"
      return
    }
    [[ -e /proc/$pid ]] || break
    sleep 0.5
  done
  tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
  die "dockerd did not answer within 60 s"
}

# The lab's SSH login for the workbench service (ssh_container_users in
# inventories/lab/group_vars): a key pair on the lab host, never used anywhere else.
prereq_ssh_key() {
  local key=$STATE_DIR/ssh/researcher_ed25519
  [[ -s $key && -s $key.pub ]] && return 0
  install -d -m 0700 "$STATE_DIR/ssh"
  rm -f "$key" "$key.pub"
  ssh-keygen -q -t ed25519 -N '' -C 'researcher@gpufleet-lab (lab only)' -f "$key"
  log "lab SSH key: $key"
}

cmd_prereqs() {
  prereq_packages
  prereq_venv
  prereq_dockerd
  prereq_ssh_key
}

# --- registry and web server ---------------------------------------------------------------

registry_config() {
  cat <<EOF
# Written by lab/lab.sh: the gpufleet lab registry, reachable only on the docker0 bridge.
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $1:$REGISTRY_PORT
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

wait_http() {
  local url=$1 pid=$2 i
  for ((i = 0; i < 40; i++)); do
    http_ok "$url" && return 0
    [[ -e /proc/$pid ]] || return 1
    sleep 0.25
  done
  return 1
}

# ensure_http_daemon NAME URL PROCESS-NAME COMMAND...: start COMMAND in the background
# (pidfile NAME.pid, log NAME.log) unless URL already answers, and wait until it does.
ensure_http_daemon() {
  local name=$1 url=$2 process=$3 pid
  shift 3
  if http_ok "$url"; then
    log "$name: answering at $url"
    return
  fi
  pid=$(pid_of "$RUN_DIR/$name.pid" "$process") || {
    start_daemon "$name" "$@"
    pid=$(<"$RUN_DIR/$name.pid")
  }
  wait_http "$url" "$pid" || {
    tail -n 20 "$LOG_DIR/$name.log" >&2 || true
    die "$name did not answer at $url"
  }
  log "$name: started at $url (pid $pid)"
}

ensure_registry() {
  local ip=$1 url
  url=http://$ip:$REGISTRY_PORT/v2/
  mkdir -p "$STATE_DIR/registry"
  if write_if_changed "$STATE_DIR/registry.yml" < <(registry_config "$ip"); then
    stop_daemon registry docker-registry # address changed: restart on the new config
  fi
  ensure_http_daemon registry "$url" docker-registry /usr/bin/docker-registry serve "$STATE_DIR/registry.yml"
}

ensure_signing_key() {
  local tmp
  mkdir -p "$GNUPG_DIR" "$WWW_DIR"
  chmod 0700 "$GNUPG_DIR"
  if ! GNUPGHOME=$GNUPG_DIR gpg --batch --list-secret-keys "$KEY_UID" >/dev/null 2>&1; then
    log "www: generating the lab archive signing key"
    GNUPGHOME=$GNUPG_DIR gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
      --quick-generate-key "$KEY_UID" rsa3072 sign never 2>/dev/null
  fi
  tmp=$(mktemp)
  GNUPGHOME=$GNUPG_DIR gpg --batch --armor --export "$KEY_UID" >"$tmp"
  if write_if_changed "$WWW_DIR/lab-archive-key.asc" <"$tmp"; then
    log "www: exported $WWW_DIR/lab-archive-key.asc"
  fi
  rm -f "$tmp"
  GNUPGHOME=$GNUPG_DIR gpgconf --kill all 2>/dev/null || true # no agent left behind
}

ensure_www() {
  local ip=$1 url
  url=http://$ip:$WWW_PORT/
  ensure_signing_key
  ensure_http_daemon www "$url" http.server "$(python_bin)" -m http.server --bind "$ip" "$WWW_PORT" --directory "$WWW_DIR"
}

# The signed local apt repository that stands in for NVIDIA's libnvidia-container stable
# repository (unreachable here), under $WWW_DIR/nvidia-container-toolkit-standin. The script
# rebuilds only when its inputs change (about 1 s), otherwise it returns at once.
STANDIN_REPO=nvidia-container-toolkit-standin
build_standin_repos() {
  bash "$LAB_DIR/standin/build-toolkit-repo.sh" --www "$WWW_DIR" --gnupghome "$GNUPG_DIR" \
    --key "$KEY_UID" 9>&-
}

cmd_standin_repos() {
  local cidr
  ensure_signing_key
  build_standin_repos
  cidr=$(bridge_cidr)
  [[ -z $cidr ]] || log "standin: http://${cidr%/*}:$WWW_PORT/$STANDIN_REPO/stable/deb/amd64/ (key: $STANDIN_REPO/gpgkey)"
}

# The STAND-INs for the pytorch/pytorch images (unpullable here), built offline, each with a
# JSON description (digest, image id) under www/images/; each rebuilds only when its inputs
# change (minutes), otherwise this takes a few seconds:
# - workbench: kinder than the official image (JupyterLab, sshd), pushed as
#   <ip>:5000/lab/pytorch-workbench:2.13-cpu-standin and saved under www/images/;
# - runtime: shaped like the official image (no JupyterLab, no sshd), pushed as
#   <ip>:5000/lab/pytorch:2.13-cpu-runtime-standin, with what a build FROM it needs: the
#   signed STAND-IN apt repository www/apt-standin/ (openssh-server) and the PyPI index
#   www/pypi/ (JupyterLab).
WORKBENCH_JSON=$WWW_DIR/images/pytorch-workbench-standin.json
RUNTIME_JSON=$WWW_DIR/images/pytorch-runtime-standin.json
cmd_standin_image() {
  local ip flavour
  need_docker
  ip=$(bridge_ip)
  ensure_registry "$ip"
  ensure_www "$ip"
  for flavour in workbench runtime; do
    bash "$LAB_DIR/standin/build-workbench-image.sh" --flavour "$flavour" --registry "$ip:$REGISTRY_PORT" \
      --www "$WWW_DIR" --www-url "http://$ip:$WWW_PORT" --state-dir "$STATE_DIR" --docker "$DOCKER" \
      --gnupghome "$GNUPG_DIR" --key "$KEY_UID" 9>&-
  done
}

# standin_field FILE KEY: a field of a stand-in image's JSON description, empty if none.
standin_field() {
  [[ -f $1 ]] || return 0
  "$(python_bin)" -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' \
    "$1" "$2" 2>/dev/null || true
}

cmd_registry() {
  local ip
  need_docker
  ip=$(bridge_ip)
  ensure_registry "$ip"
  ensure_www "$ip"
  build_standin_repos
}

# --- images ------------------------------------------------------------------------------

BUILD_ROOT=
cleanup_build() {
  [[ -n $BUILD_ROOT && -d $BUILD_ROOT ]] || return 0
  local m
  # debootstrap mounts proc/sys inside the target; never recurse into a live mount.
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
    awk -v root="$BUILD_ROOT" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r
  )
  rm -rf --one-file-system "$BUILD_ROOT"
  BUILD_ROOT=
}

build_node_image() {
  local suite=$1 image=$NODE_IMAGE_REPO:$1 start rootfs unit base
  if image_exists "$image"; then
    log "image: $image present"
    return
  fi
  start=$SECONDS
  mkdir -p "$STATE_DIR/debootstrap-cache/$suite" "$LOG_DIR"
  BUILD_ROOT=$(mktemp -d "$STATE_DIR/build.XXXXXX")
  trap cleanup_build EXIT
  rootfs=$BUILD_ROOT/rootfs
  log "image: debootstrap $suite from $MIRROR (log $LOG_DIR/debootstrap-$suite.log, ~1 min)"
  if ! debootstrap --variant=minbase --include="$NODE_PACKAGES" \
    --cache-dir="$STATE_DIR/debootstrap-cache/$suite" "$suite" "$rootfs" "$MIRROR" \
    >"$LOG_DIR/debootstrap-$suite.log" 2>&1; then
    tail -n 20 "$LOG_DIR/debootstrap-$suite.log" >&2
    die "debootstrap $suite failed"
  fi
  # Each container gets its own machine id at boot; an empty file tells systemd to make one.
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs/var/lib/dbus/machine-id"
  : >"$rootfs/etc/resolv.conf" # docker bind-mounts its own; keep the host's out of the image
  for unit in "${NODE_MASKED_UNITS[@]}"; do
    ln -sfn /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  # A node is not --privileged, so its /proc/sys is read-only: Docker 26 (Debian 13) cannot
  # disable IPv6 on the interfaces of the containers it starts there and refuses to start them.
  # A lab-only setting of the node (real hosts have a writable /proc/sys); the docker role
  # manages only its own drop-in (http-proxy.conf) next to it.
  mkdir -p "$rootfs/etc/systemd/system/docker.service.d"
  printf '%s\n' '# gpufleet lab node only: /proc/sys is read-only in a node (see lab/README.md)' \
    '[Service]' 'Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1' \
    >"$rootfs/etc/systemd/system/docker.service.d/lab-node-ipv6.conf"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb
  base=$(tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
    -c 'CMD ["/lib/systemd/systemd"]' \
    -c "LABEL $LAB_LABEL" \
    -c 'ENV container=docker' \
    -)
  # `docker import` cannot set STOPSIGNAL; systemd ignores SIGTERM, so without it every
  # `docker stop` of a node waits out the 10 s timeout.
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$base" |
    "$DOCKER" build --quiet --tag "$image" - >/dev/null
  cleanup_build
  trap - EXIT
  log "image: built $image in $((SECONDS - start)) s"
}

build_busybox_image() {
  local root applet
  if image_exists "$BUSYBOX_IMAGE"; then
    log "image: $BUSYBOX_IMAGE present"
    return
  fi
  [[ -x /bin/busybox ]] || die "/bin/busybox missing (package busybox-static)"
  BUILD_ROOT=$(mktemp -d "$STATE_DIR/build.XXXXXX")
  trap cleanup_build EXIT
  root=$BUILD_ROOT
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
    -c 'CMD ["sh"]' -c "LABEL $LAB_LABEL" - "$BUSYBOX_IMAGE" >/dev/null
  cleanup_build
  trap - EXIT
  log "image: built $BUSYBOX_IMAGE"
}

# Does the host dockerd treat $1 (host:port) as an insecure (plain HTTP) registry?
daemon_trusts() {
  "$DOCKER" info --format '{{json .RegistryConfig}}' | "$(python_bin)" "$LAB_DIR/registry_relay.py" trusts "$1"
}

push_busybox() {
  local ip=$1 reg ref manifest relay_pid
  reg=$ip:$REGISTRY_PORT
  manifest=http://$reg/v2/$BUSYBOX_REPO/manifests/$BUSYBOX_TAG
  if curl -fsS -o /dev/null --max-time 5 \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$manifest" 2>/dev/null; then
    log "image: $reg/$BUSYBOX_REPO:$BUSYBOX_TAG in the registry"
    return
  fi
  if daemon_trusts "$reg"; then
    ref=$reg/$BUSYBOX_REPO:$BUSYBOX_TAG
    "$DOCKER" tag "$BUSYBOX_IMAGE" "$ref"
    "$DOCKER" push --quiet "$ref" >/dev/null
  else
    log "image: host dockerd does not trust $reg; pushing through 127.0.0.1:$RELAY_PORT"
    ref=127.0.0.1:$RELAY_PORT/$BUSYBOX_REPO:$BUSYBOX_TAG
    local py ready=
    py=$(python_bin)
    coproc "$py" "$LAB_DIR/registry_relay.py" relay "$ip" "$REGISTRY_PORT" "$RELAY_PORT" 2>&1 9>&-
    relay_pid=$COPROC_PID
    read -r -t 10 ready <&"${COPROC[0]}" || true
    [[ $ready == ready ]] || die "loopback relay did not start (is 127.0.0.1:$RELAY_PORT free?)"
    "$DOCKER" tag "$BUSYBOX_IMAGE" "$ref"
    if ! "$DOCKER" push --quiet "$ref" >/dev/null; then
      kill "$relay_pid" 2>/dev/null || true
      die "push through the relay failed"
    fi
    "$DOCKER" rmi "$ref" >/dev/null
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  log "image: pushed $reg/$BUSYBOX_REPO:$BUSYBOX_TAG"
}

cmd_image() {
  local ip suite
  need_docker
  mkdir -p "$STATE_DIR"
  for suite in "${NODE_SUITES[@]}"; do build_node_image "$suite"; done
  build_busybox_image
  ip=$(bridge_ip)
  ensure_registry "$ip"
  push_busybox "$ip"
}

# --- nodes with the driver already installed -----------------------------------------------
# The DKMS build of the NVIDIA modules (7-17 min on 2 cores) dominates a test run. Molecule's
# nvidia_driver scenario tests the install and then commits each converged node as
# $NODE_IMAGE_REPO:<suite>-nvidia, labelled with the hash of its inputs; scenarios that do not
# test the driver install (default) start from it when the hash still matches.
DRIVER_INPUT_PATHS=(roles/nvidia_driver roles/apt_helpers plugins inventories/lab/group_vars
  molecule/shared/server.yml molecule/nvidia_driver/converge.yml)

cmd_driver_inputs() {
  local suite=${1:?driver-inputs needs a suite}
  need_docker
  {
    (cd "$REPO_ROOT" && find "${DRIVER_INPUT_PATHS[@]}" -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum)
    "$DOCKER" image inspect -f '{{.Id}}' "$NODE_IMAGE_REPO:$suite"
  } | sha256sum | cut -c1-64
}

cmd_node_image() {
  local suite=${1:?node-image needs a suite} want have
  want=$(cmd_driver_inputs "$suite")
  have=$("$DOCKER" image inspect -f '{{index .Config.Labels "gpufleet.lab.driver-inputs"}}' \
    "$NODE_IMAGE_REPO:$suite-nvidia" 2>/dev/null) || have=
  if [[ -n $have && $have == "$want" ]]; then
    echo "$NODE_IMAGE_REPO:$suite-nvidia"
  else
    echo "$NODE_IMAGE_REPO:$suite"
  fi
}

# --- nodes -------------------------------------------------------------------------------

# The Debian release of node i: LAB_NODE_SUITES (default bookworm), cycled. Debian 13 nodes
# (LAB_NODE_SUITES="bookworm trixie") stop at site.yml's driver stage, which refuses Debian 13.
node_suite() {
  local -a suites
  read -r -a suites <<<"${LAB_NODE_SUITES:-bookworm}"
  echo "${suites[($1 - 1) % ${#suites[@]}]}"
}

start_node() {
  local i=$1 name state label
  name=$NODE_PREFIX$i
  state=$("$DOCKER" inspect -f '{{.State.Status}}' "$name" 2>/dev/null) || state=absent
  if [[ $state != absent ]]; then
    label=$("$DOCKER" inspect -f '{{index .Config.Labels "gpufleet.lab"}}' "$name")
    [[ $label == 1 ]] || die "container $name exists but is not a lab container"
  fi
  case $state in
  running) log "node$i: $name running" ;;
  absent)
    "$DOCKER" run -d --name "$name" --hostname "node$i" "${NODE_FLAGS[@]}" \
      "$NODE_IMAGE_REPO:$(node_suite "$i")" "$NODE_COMMAND" >/dev/null
    log "node$i: $name created"
    ;;
  *)
    "$DOCKER" start "$name" >/dev/null
    log "node$i: $name started (was $state)"
    ;;
  esac
}

wait_node() {
  local name=$1 deadline=$2 state failed
  while :; do
    state=$("$DOCKER" exec "$name" systemctl is-system-running 2>/dev/null) || true
    case $state in
    running) return 0 ;;
    degraded)
      failed=$("$DOCKER" exec "$name" systemctl list-units --failed --plain --no-legend |
        awk '{print $1}' | paste -sd' ' -)
      log "$name: systemd degraded (failed: $failed)"
      return 0
      ;;
    esac
    ((SECONDS < deadline)) || die "$name: systemd not up within 60 s (state: ${state:-none})"
    sleep 0.5
  done
}

inventory_yaml() {
  local n=$1 ip=$2 i
  echo "# Generated by lab/lab.sh (up); removed by lab/lab.sh down. Do not edit."
  echo "---"
  echo "all:"
  echo "  children:"
  echo "    gpu_nodes:"
  echo "      hosts:"
  for ((i = 1; i <= n; i++)); do
    echo "        node$i:"
    echo "          ansible_connection: community.docker.docker"
    echo "          ansible_host: $NODE_PREFIX$i"
  done
  echo "      vars:"
  echo "        gpufleet_lab_registry: \"$ip:$REGISTRY_PORT\""
  echo "        gpufleet_lab_www: \"http://$ip:$WWW_PORT\""
  if [[ -f $WORKBENCH_JSON ]]; then
    echo "        gpufleet_lab_workbench_digest: \"$(standin_field "$WORKBENCH_JSON" digest)\""
    echo "        gpufleet_lab_workbench_id: \"$(standin_field "$WORKBENCH_JSON" image_id)\""
  fi
  if [[ -f $RUNTIME_JSON ]]; then
    echo "        gpufleet_lab_runtime_digest: \"$(standin_field "$RUNTIME_JSON" digest)\""
    echo "        gpufleet_lab_runtime_id: \"$(standin_field "$RUNTIME_JSON" image_id)\""
  fi
  # Debian 13 nodes get the lab's per-release settings (inventories/lab/group_vars/lab_debian13.yml).
  local -a trixie=()
  for ((i = 1; i <= n; i++)); do
    if [[ $(node_suite "$i") == trixie ]]; then trixie+=("node$i"); fi
  done
  if ((${#trixie[@]} > 0)); then
    echo "    lab_debian13:"
    echo "      hosts:"
    for i in "${trixie[@]}"; do echo "        $i: {}"; done
  fi
}

write_inventory() {
  mkdir -p "$(dirname "$INVENTORY")"
  if write_if_changed "$INVENTORY" < <(inventory_yaml "$1" "$2"); then
    log "inventory: wrote ${INVENTORY#"$REPO_ROOT"/}"
  else
    log "inventory: ${INVENTORY#"$REPO_ROOT"/} up to date"
  fi
}

cmd_up() {
  local n=${LAB_NODES:-2} i ip start deadline extra
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "LAB_NODES must be a positive number"
  start=$SECONDS
  cmd_prereqs
  cmd_image
  cmd_registry
  cmd_standin_image
  ip=$(bridge_ip)
  for ((i = 1; i <= n; i++)); do start_node "$i"; done
  deadline=$((SECONDS + 60))
  for ((i = 1; i <= n; i++)); do wait_node "$NODE_PREFIX$i" "$deadline"; done
  extra=$("$DOCKER" ps -a --filter "label=$LAB_LABEL" --format '{{.Names}}' |
    awk -v p="$NODE_PREFIX" -v n="$n" 'index($0, p) == 1 && substr($0, length(p) + 1) + 0 > n' |
    paste -sd' ' -)
  [[ -z $extra ]] || log "note: $extra beyond LAB_NODES=$n left alone (down removes them)"
  write_inventory "$n" "$ip"
  log "up: $n node(s) ready in $((SECONDS - start)) s"
  log "registry $ip:$REGISTRY_PORT, web http://$ip:$WWW_PORT/ (key: lab-archive-key.asc)"
  log "stand-in NVIDIA toolkit repo: http://$ip:$WWW_PORT/$STANDIN_REPO/stable/deb/amd64/"
  log "stand-in images: $(standin_field "$WORKBENCH_JSON" repository) (workbench), $(standin_field "$RUNTIME_JSON" repository) (runtime)"
  log "stand-in mirrors: $(standin_field "$RUNTIME_JSON" apt_url) (apt), $(standin_field "$RUNTIME_JSON" pip_index_url) (PyPI)"
  log "reach a node: docker exec -it ${NODE_PREFIX}1 bash"
}

# --- down / status -----------------------------------------------------------------------

cmd_down() {
  local ids images image pass pid
  if docker_ok; then
    ids=$("$DOCKER" ps -aq --filter "label=$LAB_LABEL")
    if [[ -n $ids ]]; then
      # shellcheck disable=SC2086 # one id per word
      "$DOCKER" rm -f -v $ids >/dev/null
      log "down: removed $(wc -w <<<"$ids") container(s) and their volumes"
    fi
  else
    log "down: docker does not answer; no containers to remove"
  fi
  stop_daemon registry docker-registry
  stop_daemon www http.server
  if [[ -f $INVENTORY ]]; then
    rm -f "$INVENTORY"
    rmdir "$(dirname "$INVENTORY")" 2>/dev/null || true
    log "down: removed ${INVENTORY#"$REPO_ROOT"/}"
  fi
  if [[ ${LAB_PURGE:-0} != 1 ]]; then
    log "down: done (images, registry data and dockerd kept; LAB_PURGE=1 removes them)"
    return
  fi
  if docker_ok; then
    # One at a time, newest first (docker's order), a few passes: a node image committed from a
    # lab node (lab/lab.sh node-image) is a child of its base and must go before it.
    for pass in 1 2 3; do
      images=$("$DOCKER" images -q --filter "label=$LAB_LABEL" | awk '!seen[$0]++')
      [[ -n $images ]] || break
      for image in $images; do "$DOCKER" rmi -f "$image" >/dev/null 2>&1 || true; done
      log "down: removed lab images (pass $pass)"
    done
    images=$("$DOCKER" images -q --filter "label=$LAB_LABEL")
    [[ -z $images ]] || die "down: lab images left that docker would not remove: $(paste -sd' ' - <<<"$images")"
  fi
  if [[ -d $GNUPG_DIR ]]; then
    GNUPGHOME=$GNUPG_DIR gpgconf --kill all 2>/dev/null || true
  fi
  rm -rf --one-file-system "$STATE_DIR"
  log "down: removed $STATE_DIR"
  if pid=$(pid_of "$RUN_DIR/dockerd.pid" dockerd); then
    stop_daemon dockerd dockerd
  else
    rm -f "$RUN_DIR/dockerd.pid"
    docker_ok && log "down: dockerd was not started by the lab; left running"
  fi
  rm -rf "$LOG_DIR"
  rm -rf "$RUN_DIR" # the lock file goes too; our fd stays valid until exit
  log "down: purged"
}

cmd_status() {
  local ip pid image
  if docker_ok; then
    if pid=$(pid_of "$RUN_DIR/dockerd.pid" dockerd); then
      log "dockerd: answering (started by the lab, pid $pid)"
    else
      log "dockerd: answering (not started by the lab)"
    fi
  else
    log "dockerd: not answering"
    return 0
  fi
  "$DOCKER" ps -a --filter "label=$LAB_LABEL" --format 'table {{.Names}}\t{{.Status}}\t{{.Image}}'
  ip=$(bridge_cidr)
  ip=${ip%/*}
  if [[ -n $ip ]] && http_ok "http://$ip:$REGISTRY_PORT/v2/"; then
    log "registry: http://$ip:$REGISTRY_PORT/v2/ answering (pid $(pid_of "$RUN_DIR/registry.pid" docker-registry || echo '?'))"
  else
    log "registry: not answering"
  fi
  if [[ -n $ip ]] && http_ok "http://$ip:$WWW_PORT/"; then
    log "www: http://$ip:$WWW_PORT/ answering (pid $(pid_of "$RUN_DIR/www.pid" http.server || echo '?'))"
  else
    log "www: not answering"
  fi
  for image in "${NODE_SUITES[@]/#/$NODE_IMAGE_REPO:}" "$BUSYBOX_IMAGE"; do
    if image_exists "$image"; then log "image: $image present"; else log "image: $image absent"; fi
  done
  if [[ -f $WORKBENCH_JSON ]]; then
    log "workbench: $(standin_field "$WORKBENCH_JSON" repository):$(standin_field "$WORKBENCH_JSON" tag) @ $(standin_field "$WORKBENCH_JSON" digest)"
    log "workbench: $(standin_field "$WORKBENCH_JSON" archive_url) (image id $(standin_field "$WORKBENCH_JSON" image_id))"
  else
    log "workbench: absent (lab/lab.sh standin-image)"
  fi
  if [[ -f $RUNTIME_JSON ]]; then
    log "runtime: $(standin_field "$RUNTIME_JSON" repository):$(standin_field "$RUNTIME_JSON" tag) @ $(standin_field "$RUNTIME_JSON" digest)"
    log "runtime: image id $(standin_field "$RUNTIME_JSON" image_id); apt $(standin_field "$RUNTIME_JSON" apt_url), PyPI $(standin_field "$RUNTIME_JSON" pip_index_url)"
  else
    log "runtime: absent (lab/lab.sh standin-image)"
  fi
  if [[ -f $INVENTORY ]]; then
    log "inventory: ${INVENTORY#"$REPO_ROOT"/}"
  else
    log "inventory: absent"
  fi
}

# For `eval "$(lab/lab.sh env)"` in test drivers that pass the addresses to Molecule.
cmd_env() {
  local ip
  need_docker
  ip=$(bridge_ip)
  printf "GPUFLEET_LAB_REGISTRY='%s'\n" "$ip:$REGISTRY_PORT"
  printf "GPUFLEET_LAB_WWW='%s'\n" "http://$ip:$WWW_PORT"
  if [[ -f $WORKBENCH_JSON ]]; then
    printf "GPUFLEET_LAB_WORKBENCH_DIGEST='%s'\n" "$(standin_field "$WORKBENCH_JSON" digest)"
    printf "GPUFLEET_LAB_WORKBENCH_ID='%s'\n" "$(standin_field "$WORKBENCH_JSON" image_id)"
  fi
  if [[ -f $RUNTIME_JSON ]]; then
    printf "GPUFLEET_LAB_RUNTIME_DIGEST='%s'\n" "$(standin_field "$RUNTIME_JSON" digest)"
    printf "GPUFLEET_LAB_RUNTIME_ID='%s'\n" "$(standin_field "$RUNTIME_JSON" image_id)"
  fi
}

main() {
  local cmd=${1:-}
  case $cmd in
  node-flags) printf '%s\n' "${NODE_FLAGS[@]}" ;;
  env) cmd_env ;;
  status) cmd_status ;;
  driver-inputs | node-image) "cmd_${cmd//-/_}" "${@:2}" ;;
  prereqs | image | registry | up | down | standin-repos | standin-image)
    [[ $(id -u) == 0 ]] || die "run as root"
    lock
    "cmd_${cmd//-/_}"
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
