#!/bin/sh
# Entry point of gpufleet.node.ssh_container, mounted read-only into the pinned image (the
# image is never changed). It runs as root inside the container, with a reduced capability
# set, because sshd must switch to the logged-in user; sessions run as the listed users.
#   1. creates the users and group listed in users (name:uid:gid:group), home /workspace,
#      no password (keys only), and their authorized_keys from authorized_keys (name key...);
#   2. creates missing host keys in the host_keys folder, which the host persists, so
#      clients see the same fingerprint after restarts and redeploys;
#   3. hands the image's environment (PATH with its Python and torch, CUDA and NVIDIA
#      variables) to sessions, which sshd would otherwise start with a bare PATH;
#   4. runs sshd in the foreground, logging to stderr (the journal).
set -eu
CONF=/etc/gpufleet-ssh
RUN=/run/gpufleet-ssh

mkdir -p "$RUN/authorized_keys" /run/sshd
chmod 0755 "$RUN" "$RUN/authorized_keys"

while IFS=: read -r name uid gid group home; do
  [ -n "$name" ] || continue
  getent group "$gid" >/dev/null || groupadd --gid "$gid" "$group"
  if ! getent passwd "$name" >/dev/null; then
    # --non-unique: the image may already have a user with this uid (ubuntu is 1000 in some)
    useradd --non-unique --no-create-home --home-dir "$home" --shell /bin/bash \
      --uid "$uid" --gid "$gid" "$name"
  fi
  # '*': no password can ever match, yet the account is not locked (sshd refuses locked ones)
  usermod --password '*' "$name"
  : >"$RUN/authorized_keys/$name"
done <"$CONF/users"

while read -r name key; do
  [ -n "$name" ] && [ -f "$RUN/authorized_keys/$name" ] && printf '%s\n' "$key" >>"$RUN/authorized_keys/$name"
done <"$CONF/authorized_keys"
chmod 0644 "$RUN"/authorized_keys/*

# No ECDSA host key: its NIST curves are what ssh-audit fails. A key made by an earlier
# version stays on disk, unused.
for type in ed25519 rsa; do
  key=$CONF/host_keys/ssh_host_${type}_key
  [ -s "$key" ] || ssh-keygen -q -t "$type" -b "$([ "$type" = rsa ] && echo 4096 || echo 256)" -N '' \
    -C "gpufleet-ssh host key" -f "$key"
done

# Values with quotes or backslashes cannot be passed safely and are left out.
cp "$CONF/sshd_config" "$RUN/sshd_config"
: >"$RUN/environment.sh"
setenv=
for var in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
  case $var in
  HOME | HOSTNAME | PWD | OLDPWD | SHLVL | TERM | USER | LOGNAME | SHELL | MAIL | _) continue ;;
  esac
  value=$(printenv "$var")
  case $value in *[\"\\\']* | *"
"*) continue ;; esac
  setenv="$setenv \"$var=$value\""
  printf "export %s='%s'\n" "$var" "$value" >>"$RUN/environment.sh"
done
[ -z "$setenv" ] || printf 'SetEnv%s\n' "$setenv" >>"$RUN/sshd_config"
# Login shells reset PATH in /etc/profile, then read profile.d: put the image's back.
cp "$RUN/environment.sh" /etc/profile.d/00-gpufleet-image-env.sh

exec /usr/sbin/sshd -D -e -f "$RUN/sshd_config"
