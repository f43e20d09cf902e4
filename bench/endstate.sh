#!/usr/bin/env bash
# Prints a node's end state in a stable form, so bench.sh can diff the node Ansible converged
# with the node the floor script converged: packages and versions, holds and manual marks,
# the files the roles manage (mode, owner, content hash), units, images and containers.
# Content that is random by nature (SSH host keys, dockerd's key.json) shows as "random";
# daemon.json backups show without their time stamp.
set -uo pipefail
export LC_ALL=C

echo "## packages"
dpkg-query -W -f '${db:Status-Abbrev} ${Package}=${Version}\n' | awk '$1 ~ /^.i/ {print $2}' | sort
echo "## held"
apt-mark showhold | sort
echo "## manual"
apt-mark showmanual | sort

echo "## files"
paths=(/etc/docker /etc/systemd/system/docker.service.d /etc/apt/sources.list.d /etc/apt/preferences.d
  /etc/apt/keyrings /etc/apt/apt.conf.d /etc/modprobe.d /etc/gpufleet /etc/cdi
  /etc/udev/rules.d /etc/systemd/system/gpufleet-jupyter.service /etc/systemd/system/gpufleet-ssh.service)
# /srv/gpufleet: the folders, not what the services write into them (Jupyter's runtime files).
{
  for p in "${paths[@]}"; do
    [[ -e $p ]] && find "$p" -xdev
  done
  [[ -e /srv/gpufleet ]] && find /srv/gpufleet -maxdepth 1
} | sort -u | while IFS= read -r f; do
  name=$f
  [[ $name == /etc/docker/daemon.json.*~ ]] && name=/etc/docker/daemon.json.BACKUP~
  meta=$(stat -c '%F %a %U:%G' "$f")
  if [[ -f $f ]]; then
    case $f in
    /etc/gpufleet/ssh/host_keys/* | /etc/docker/key.json) sum=random ;;
    *) sum=$(sha256sum <"$f" | cut -c1-16) ;;
    esac
    printf '%s %s %s\n' "$name" "$meta" "$sum"
  else
    printf '%s %s\n' "$name" "$meta"
  fi
done
echo "## boot"
ls /boot 2>/dev/null
echo "## dkms"
command -v dkms >/dev/null && dkms status 2>/dev/null
echo "## units"
for u in docker containerd nvidia-persistenced gpufleet-jupyter gpufleet-ssh; do
  printf '%s enabled=%s active=%s\n' "$u" "$(systemctl is-enabled "$u" 2>/dev/null)" "$(systemctl is-active "$u" 2>/dev/null)"
done
echo "## docker group"
getent group docker
echo "## images"
command -v docker >/dev/null && docker images --digests --format '{{.Repository}}@{{.Digest}} {{.ID}}' 2>/dev/null | sort
echo "## containers"
command -v docker >/dev/null && docker ps --format '{{.Names}} {{.Image}}' 2>/dev/null | sort
exit 0
