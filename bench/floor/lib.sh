# shellcheck shell=bash
# Helpers shared by the floor scripts (sourced, runs on the node). A floor script reaches the
# end state a role reaches, with plain commands and no checks beyond what the work needs.
# Every step prints "FLOOR-STEP<TAB>seconds<TAB>name", which bench.sh collects.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive DEBIAN_PRIORITY=critical LC_ALL=C.UTF-8

# The Ansible apt module runs dpkg with these options; the floor does the same.
APT_GET=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

_usec() { local t=${EPOCHREALTIME/./}; echo "${t#0}"; }

# step NAME COMMAND...: run COMMAND, print its wall time.
step() {
  local name=$1 t0 t1
  shift
  t0=$(_usec)
  "$@"
  t1=$(_usec)
  printf 'FLOOR-STEP\t%d.%02d\t%s\n' $(((t1 - t0) / 1000000)) $((((t1 - t0) % 1000000) / 10000)) "$name"
}

# put DEST MODE [OWNER [GROUP]] < content: write a file in one go (mode and owner as the role sets them).
put() {
  local dest=$1 mode=$2 owner=${3:-root} group=${4:-root} tmp
  tmp=$(mktemp "$(dirname "$dest")/.floor.XXXXXX")
  cat >"$tmp"
  chown "$owner:$group" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
}

# apt_lists: what apt_helpers does - fetch package lists only when the node has none.
apt_lists() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || "${APT_GET[@]}" update
}

apt_install() { "${APT_GET[@]}" install --no-install-recommends "$@"; }

# hold PKG...: apt-mark hold what is not held yet (apt_helpers/tasks/hold.yml: one call).
hold() {
  local held todo=() p
  held=$(apt-mark showhold)
  for p in "$@"; do grep -qx -- "$p" <<<"$held" || todo+=("$p"); done
  ((${#todo[@]} == 0)) || apt-mark hold "${todo[@]}" >/dev/null
}

# daemon_json CONTENT: write /etc/docker/daemon.json the way the docker role's copy task does
# (backup: true keeps the previous file as daemon.json.<pid>.<date>@<time>~).
daemon_json() {
  install -d -m 0755 -o root -g root /etc/docker
  if [[ -f /etc/docker/daemon.json ]]; then
    cmp -s /etc/docker/daemon.json - <<<"$1" && return 0
    cp -p /etc/docker/daemon.json "/etc/docker/daemon.json.$$.$(date +%F@%T)~"
  fi
  put /etc/docker/daemon.json 0644 <<<"$1"
}

restart_docker() {
  systemctl daemon-reload
  systemctl restart docker
}
