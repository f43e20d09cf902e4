#!/usr/bin/env bash
# Floor for the whole site.yml on a fresh lab node (Debian 12, inventories/lab/group_vars):
# the end state every stage reaches, with plain commands, in the playbook's order.
#   driver    Debian's contrib/non-free/non-free-firmware sources, the driver pin, headers,
#             nvidia-driver + nvidia-open-kernel-dkms + nvidia-smi + nvidia-persistenced
#             (--no-install-recommends; DKMS builds the open modules for the 6.1 headers),
#             every driver package held, kept out of unattended-upgrades, nouveau blacklisted
#             and the initramfs rebuilt (the role's handler), persistenced enabled, dkms status
#   docker    floor/docker.sh
#   toolkit   the lab's STAND-IN for NVIDIA's repository (key + source), the four packages at
#             the pin and held, the nvidia runtime and CDI merged into daemon.json, dockerd restarted
#   image     python3-requests (the role uses ansible.builtin.package: apt's default, recommends
#             included), the pinned image pulled by digest from the lab registry
#   services  Jupyter and SSH: folders, configuration, token, units, started and enabled, the
#             role's .applied fingerprints, waiting until Jupyter answers (and takes the token)
#             and sshd greets
#   verify    the torch probe run in the pinned image (the role's probe script), the services'
#             containers and images inspected, the toolkit version read
# Not done: the roles' read-only checks (asserts, facts, index and pin checks) and the fleet
# report, which Ansible writes on the controller. No GPU and no module loading in a node: the
# role skips the same things (CDI spec, nvidia-smi, starting persistenced, reboot).
# Inputs: BENCH_REGISTRY, BENCH_WWW, BENCH_DIGEST (lab/lab.sh env); researcher.pub,
# torch_probe.py and sshd-entrypoint.sh beside this script (bench.sh copies them in).
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/floor/docker.sh
. "$HERE/docker.sh"

: "${BENCH_WWW:?set BENCH_WWW (lab web server URL)}"
: "${BENCH_DIGEST:?set BENCH_DIGEST (the stand-in workbench digest)}"

# The lab's values (inventories/lab/group_vars/gpu_nodes.yml) and role defaults.
DRIVER_VERSION=535.261.03-1
TOOLKIT_VERSION=1.18.0-1
TOOLKIT_URL=$BENCH_WWW/nvidia-container-toolkit-standin/stable/deb/amd64/
TOOLKIT_KEY_URL=$BENCH_WWW/nvidia-container-toolkit-standin/gpgkey
IMAGE=$BENCH_REGISTRY/lab/pytorch-workbench@$BENCH_DIGEST
TOKEN=lab-only-token-0123456789abcdef0123456789
HOST=$(hostname -s) # the inventory name: the services' --hostname
ULIMITS="--ulimit memlock=8388608:8388608 --ulimit stack=67108864:67108864"
VOLUMES="--volume /srv/gpufleet/workspace:/workspace --volume /srv/gpufleet/data:/data --volume /srv/gpufleet/models:/models --volume /srv/gpufleet/logs:/logs"

fetch() { python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; }

# --- driver ------------------------------------------------------------------------------
driver_sources() {
  put /etc/apt/sources.list.d/gpufleet-nvidia.sources 0644 <<'EOF'
# Ansible managed
# Debian components the NVIDIA driver needs that the host's own sources lacked.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  put /etc/apt/preferences.d/gpufleet-nvidia-driver 0644 <<EOF
# Ansible managed
# Every binary package of the driver's source packages at one version: Debian's archive
# carries several, and mixing them breaks the driver's exact-version dependencies.
Package: src:nvidia-graphics-drivers src:nvidia-open-gpu-kernel-modules
Pin: version $DRIVER_VERSION
Pin-Priority: 1001
EOF
}

driver_hold() {
  local pkgs
  pkgs=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 ~ /^.i/ {print $2}' |
    grep -E '^(nvidia-|libnvidia-|libcuda|libnvcuvid|libnvoptix|libxnvctrl|firmware-nvidia-|xserver-xorg-video-nvidia|libgl1-nvidia-|libglx-nvidia|libegl-nvidia|libgles-nvidia|cuda-drivers|kmod-nvidia|linux-modules-nvidia-|linux-objects-nvidia-|linux-signatures-nvidia-)' |
    grep -vE '^(nvidia-container-|libnvidia-container)')
  # shellcheck disable=SC2086 # one package per word
  hold $pkgs
}

driver_unattended() {
  put /etc/apt/apt.conf.d/51gpufleet-nvidia-driver 0644 <<'EOF'
// Ansible managed
// The NVIDIA driver moves only when gpufleet.node.nvidia_driver moves it: an unattended
// library upgrade under a loaded module is the "NVML: Driver/library version mismatch".
Unattended-Upgrade::Package-Blacklist {
    "nvidia-";
    "libnvidia-";
    "libcuda";
    "libnvcuvid";
    "libnvoptix";
    "firmware-nvidia-";
    "xserver-xorg-video-nvidia";
    "cuda-drivers";
    "linux-modules-nvidia-";
    "linux-objects-nvidia-";
    "linux-signatures-nvidia-";
};
EOF
}

driver_blacklist() {
  put /etc/modprobe.d/gpufleet-blacklist-nouveau.conf 0644 <<'EOF'
# Managed by gpufleet.node.nvidia_driver: the NVIDIA driver owns the GPUs.
blacklist nouveau
options nouveau modeset=0
EOF
}

driver_dkms_status() { dkms status | grep -q '^nvidia.*: installed'; }

driver_stage() {
  step "driver: apt lists" apt_lists
  step "driver: sources and pin" driver_sources
  step "driver: apt-get update" "${APT_GET[@]}" update
  step "driver: install linux-headers-amd64" apt_install linux-headers-amd64
  step "driver: install the driver (DKMS build)" apt_install nvidia-driver nvidia-open-kernel-dkms nvidia-smi nvidia-persistenced
  step "driver: hold driver packages" driver_hold
  step "driver: unattended-upgrades blacklist" driver_unattended
  step "driver: blacklist nouveau" driver_blacklist
  step "driver: rebuild initramfs (handler)" update-initramfs -u -k all
  step "driver: enable nvidia-persistenced" systemctl enable nvidia-persistenced.service --quiet
  step "driver: dkms status" driver_dkms_status
}

# --- toolkit -----------------------------------------------------------------------------
toolkit_repo() {
  install -d -m 0755 /etc/apt/keyrings
  fetch "$TOOLKIT_KEY_URL" /etc/apt/keyrings/nvidia-container-toolkit.asc
  chmod 0644 /etc/apt/keyrings/nvidia-container-toolkit.asc
  rm -f /etc/apt/sources.list.d/{nvidia-docker,libnvidia-container,nvidia-container-toolkit,nvidia-container-runtime}.list
  put /etc/apt/sources.list.d/gpufleet-nvidia-container-toolkit.sources 0644 <<EOF
# Ansible managed
# NVIDIA's libnvidia-container stable repository (or a site mirror of it).
Types: deb
URIs: $TOOLKIT_URL
Suites: /
Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc
EOF
}

TOOLKIT_PACKAGES=(nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1)

toolkit_stage() {
  step "toolkit: key and source" toolkit_repo
  step "toolkit: apt-get update" "${APT_GET[@]}" update
  step "toolkit: install the four packages" apt_install "${TOOLKIT_PACKAGES[@]/%/=$TOOLKIT_VERSION}"
  step "toolkit: hold" hold "${TOOLKIT_PACKAGES[@]}"
  step "toolkit: merge the runtime into daemon.json" daemon_json "$(docker_daemon_json nvidia)"
  step "toolkit: restart dockerd (handler)" restart_docker
}

# --- image -------------------------------------------------------------------------------
image_stage() {
  step "image: install python3-requests" "${APT_GET[@]}" install python3-requests
  step "image: docker pull by digest" docker pull --quiet "$IMAGE"
}

# --- services ----------------------------------------------------------------------------
# unit NAME DESCRIPTION EXECSTART: the container_service unit template.
unit() {
  put "/etc/systemd/system/$1.service" 0644 <<EOF
# Ansible managed
# $1: a container from the pinned image, run by systemd.
# The container is disposable (--rm); work lives in the host folders it mounts.
[Unit]
Description=$2
Documentation=https://github.com/gpufleet/node
Wants=docker.service network-online.target
After=docker.service network-online.target
# Keep retrying while Docker is down or restarting, however long that takes.
StartLimitIntervalSec=0

[Service]
Type=simple
# A container left behind by a crash or a killed unit would block the name.
ExecStartPre=-/usr/bin/docker rm --force $1
ExecStart=$3
ExecStop=/usr/bin/docker stop --time 30 $1
Restart=always
RestartSec=5
TimeoutStartSec=120
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
EOF
}

# applied NAME CONFIG_DIR FILE...: container_service's record of what the service started from:
# sha256 of the unit, the files' contents joined by the two characters \0 (what the role's
# '\0' in a YAML block scalar gives), and the loaded driver ('none').
applied() {
  local name=$1 dir=$2
  shift 2
  python3 - "/etc/systemd/system/$name.service" "$@" <<'EOF' | put "$dir/.applied" 0600
import hashlib, sys
unit = open(sys.argv[1]).read()
files = "\\0".join(open(f).read() for f in sys.argv[2:])
sys.stdout.write(hashlib.sha256((unit + files + "none").encode()).hexdigest())
EOF
}

host_folders() { # OWNER (the /srv/gpufleet folders both services mount)
  install -d -m 0755 /srv/gpufleet
  install -d -m 2775 -o "$1" -g 1000 /srv/gpufleet/workspace /srv/gpufleet/data /srv/gpufleet/models /srv/gpufleet/logs
}

jupyter_files() {
  install -d -m 0755 /etc/gpufleet/jupyter
  host_folders 1000
  install -d -m 0500 -o 1000 -g 1000 /etc/gpufleet/jupyter/secrets
  put /etc/gpufleet/jupyter/jupyter_server_config.py 0644 <<'EOF'
# Ansible managed
# Jupyter Server settings for gpufleet-jupyter (gpufleet.node.jupyter_container).
# The token is read from a read-only 0600 file at start: it is never on a command line, in
# the environment, in `docker inspect` or in this file.
from pathlib import Path

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

c.ServerApp.ip = "0.0.0.0"  # inside the container; the host publishes on 127.0.0.1
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/workspace"
c.ServerApp.base_url = "/"
c.ServerApp.allow_remote_access = True
c.ServerApp.quit_button = False  # systemd restarts the service anyway
c.IdentityProvider.token = Path("/run/secrets/gpufleet-jupyter/token").read_text().strip()
EOF
  printf '%s' "$TOKEN" | put /etc/gpufleet/jupyter/secrets/token 0600 1000 1000
  unit gpufleet-jupyter "JupyterLab in the pinned PyTorch image (gpufleet.node)" \
    "/usr/bin/docker run --rm --name gpufleet-jupyter --pull never --init --label gpufleet.service=gpufleet-jupyter --hostname $HOST --user 1000:1000 --workdir /workspace --security-opt no-new-privileges --cap-drop ALL --shm-size 16g $ULIMITS --publish 127.0.0.1:8888:8888 $VOLUMES --volume /etc/gpufleet/jupyter/jupyter_server_config.py:/etc/gpufleet/jupyter_server_config.py:ro --volume /etc/gpufleet/jupyter/secrets:/run/secrets/gpufleet-jupyter:ro --env HOME=/workspace $IMAGE jupyter lab --config=/etc/gpufleet/jupyter_server_config.py"
}

# poll SECONDS PYTHON_CONDITION: wait (0.5 s steps) until the condition's script exits 0.
poll() {
  local deadline=$((SECONDS + $1))
  until python3 -c "$2" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

jupyter_up() {
  poll 120 'import urllib.request; assert urllib.request.urlopen("http://127.0.0.1:8888/api", timeout=5).status == 200'
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8888/api/status", headers={"Authorization": "token " + sys.argv[1]}), timeout=5)' "$TOKEN"
}

ssh_files() {
  install -d -m 0755 /etc/gpufleet/ssh
  host_folders 1000
  install -d -m 0700 /etc/gpufleet/ssh/host_keys
  put /etc/gpufleet/ssh/entrypoint.sh 0644 <"$HERE/sshd-entrypoint.sh"
  put /etc/gpufleet/ssh/sshd_config 0644 <<'EOF'
# Ansible managed
# sshd in gpufleet-ssh (gpufleet.node.ssh_container). The entry point appends
# SetEnv with the image's environment. Published on the host as 0.0.0.0:2222:2222.
Port 2222
ListenAddress 0.0.0.0
HostKey /etc/gpufleet-ssh/host_keys/ssh_host_ed25519_key
HostKey /etc/gpufleet-ssh/host_keys/ssh_host_ecdsa_key
HostKey /etc/gpufleet-ssh/host_keys/ssh_host_rsa_key

# Keys only, never root, only the users listed in the inventory.
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
AuthenticationMethods publickey
UsePAM no
AllowUsers researcher
AuthorizedKeysFile /run/gpufleet-ssh/authorized_keys/%u
StrictModes yes
MaxAuthTries 3
LoginGraceTime 30

AllowTcpForwarding local
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PermitUserEnvironment no
PrintMotd no
ClientAliveInterval 60
ClientAliveCountMax 3
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
  echo "researcher:1000:1000:workbench:/workspace" | put /etc/gpufleet/ssh/users 0644
  echo "researcher $(cat "$HERE/researcher.pub")" | put /etc/gpufleet/ssh/authorized_keys 0644
  unit gpufleet-ssh "SSH into the pinned PyTorch image (gpufleet.node)" \
    "/usr/bin/docker run --rm --name gpufleet-ssh --pull never --init --label gpufleet.service=gpufleet-ssh --hostname $HOST --security-opt no-new-privileges --cap-drop ALL --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER --cap-add SETUID --cap-add SETGID --cap-add SYS_CHROOT --cap-add KILL --cap-add AUDIT_WRITE --shm-size 16g $ULIMITS --publish 0.0.0.0:2222:2222 $VOLUMES --volume /etc/gpufleet/ssh/entrypoint.sh:/etc/gpufleet-ssh/entrypoint.sh:ro --volume /etc/gpufleet/ssh/sshd_config:/etc/gpufleet-ssh/sshd_config:ro --volume /etc/gpufleet/ssh/users:/etc/gpufleet-ssh/users:ro --volume /etc/gpufleet/ssh/authorized_keys:/etc/gpufleet-ssh/authorized_keys:ro --volume /etc/gpufleet/ssh/host_keys:/etc/gpufleet-ssh/host_keys $IMAGE /bin/sh /etc/gpufleet-ssh/entrypoint.sh"
}

sshd_up() {
  poll 120 'import socket; s = socket.create_connection(("127.0.0.1", 2222), timeout=5); assert b"OpenSSH" in s.recv(256)'
}

start() {
  systemctl daemon-reload
  systemctl enable --now --quiet "$1.service"
}

services_stage() {
  step "services: jupyter folders, files, unit" jupyter_files
  step "services: start jupyter" start gpufleet-jupyter
  step "services: record jupyter's .applied" applied gpufleet-jupyter /etc/gpufleet/jupyter \
    /etc/gpufleet/jupyter/jupyter_server_config.py /etc/gpufleet/jupyter/secrets/token
  step "services: wait for jupyter, check the token" jupyter_up
  step "services: ssh folders, files, unit" ssh_files
  step "services: start sshd" start gpufleet-ssh
  step "services: record ssh's .applied" applied gpufleet-ssh /etc/gpufleet/ssh \
    /etc/gpufleet/ssh/entrypoint.sh /etc/gpufleet/ssh/sshd_config /etc/gpufleet/ssh/users /etc/gpufleet/ssh/authorized_keys
  step "services: wait for sshd" sshd_up
}

# --- verify ------------------------------------------------------------------------------
probe() {
  docker run --rm -i --name "gpufleet-probe-floor$$" --pull never --network none --ipc host \
    --entrypoint python3 "$IMAGE" - '{"benchmark": false}' <"$HERE/torch_probe.py" >/dev/null
}

# What gpu_verify reads besides the probe: the services' containers and images, the toolkit version.
inspect() {
  docker inspect gpufleet-jupyter gpufleet-ssh >/dev/null
  docker image inspect "$IMAGE" >/dev/null
  dpkg-query -W -f '${Version}' nvidia-container-toolkit >/dev/null
}

verify_stage() {
  step "verify: torch probe in the pinned image" probe
  step "verify: inspect services, images, toolkit version" inspect
}

driver_stage
docker_stage
toolkit_stage
image_stage
services_stage
verify_stage
