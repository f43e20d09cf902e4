#!/usr/bin/env bash
# Builds the lab's STAND-IN for the pytorch/pytorch workbench image, which cannot be pulled
# here, and publishes it two ways: in the lab registry and as a `docker save` archive on the
# lab web server. It is NOT the pytorch/pytorch image: a Debian bookworm rootfs (debootstrap
# minbase) with python3, openssh-server (no host keys), tini, procps and ca-certificates, and
# a venv at /opt/pytorch (first on PATH, as /opt/conda/bin is in the real image) holding the
# CPU build of torch, numpy and JupyterLab, pinned with hashes in workbench/requirements.txt.
# No users, no sshd or Jupyter configuration: roles mount those at run time.
#
# The build runs no network inside a container: wheels are downloaded on the host (PyPI and
# pip's find-links folder), installed with pip --no-index in a chroot, and the rootfs goes in
# with `docker import`. The image carries the sha256 of the inputs (this script and
# workbench/) in the label gpufleet.lab.inputs; a re-run with the same inputs does not
# rebuild, it only makes sure that the registry and the archive hold the image.
#
# Publishes:
#   REGISTRY/lab/pytorch-workbench:2.13-cpu-standin          (and @sha256:... by digest)
#   WWW/images/pytorch-workbench-standin.tar                 (docker save; tag inside:
#                                                             gpufleet-lab/pytorch-workbench:2.13-cpu-standin)
#   WWW/images/pytorch-workbench-standin.json                (references, digest, image id)
#
# usage: build-workbench-image.sh --registry HOST:PORT --www-url URL [--www DIR]
#                                 [--state-dir DIR] [--docker CLI] [--force]
#        build-workbench-image.sh --relock      (re-resolve workbench/requirements.txt)
# lab/lab.sh standin-image passes the lab's values. LAB_MIRROR sets the Debian mirror,
# LAB_WHEELS the folder with the CPU torch wheel (default /opt/wheels), LAB_PUSH_RELAY=1
# forces the push through the loopback relay (otherwise used only when dockerd does not
# trust the registry).
set -euo pipefail
umask 022

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
RELAY_HELPER=$HERE/../registry_relay.py # shared with lab/lab.sh
SELF=$HERE/$(basename -- "${BASH_SOURCE[0]}")
WB=$HERE/workbench

STATE_DIR=/var/lib/gpufleet-lab
WWW_DIR=
WWW_URL=
REGISTRY=
DOCKER=${LAB_DOCKER:-/usr/bin/docker}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
WHEELS=${LAB_WHEELS:-/opt/wheels}
RUN_DIR=${GPUFLEET_LAB_RUN_DIR:-/run/gpufleet-lab}
LOG_DIR=/var/log/gpufleet-lab
FORCE=0
RELOCK=0

SUITE=bookworm
PACKAGES=python3,python3-venv,openssh-server,ca-certificates,tini,procps
VENV=/opt/pytorch
IMAGE_PATH=lab/pytorch-workbench # repository path in the registry
TAG=2.13-cpu-standin
LOCAL_IMAGE=gpufleet-lab/pytorch-workbench:$TAG
ARCHIVE_NAME=pytorch-workbench-standin
TITLE='STAND-IN for pytorch/pytorch (CPU torch 2.13, JupyterLab, openssh-server)'
MANIFEST_V2=application/vnd.docker.distribution.manifest.v2+json
RELAY_PORT=5000

log() { printf 'lab: workbench: %s\n' "$*"; }
die() {
  printf 'lab: workbench: error: %s\n' "$*" >&2
  exit 1
}

while (($#)); do
  case $1 in
  --registry) REGISTRY=${2:?--registry needs HOST:PORT} && shift 2 ;;
  --www) WWW_DIR=${2:?--www needs a directory} && shift 2 ;;
  --www-url) WWW_URL=${2:?--www-url needs a URL} && shift 2 ;;
  --state-dir) STATE_DIR=${2:?--state-dir needs a directory} && shift 2 ;;
  --docker) DOCKER=${2:?--docker needs a path} && shift 2 ;;
  --force) FORCE=1 && shift ;;
  --relock) RELOCK=1 && shift ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF"
    exit 0
    ;;
  *) die "unknown argument: $1 (see --help)" ;;
  esac
done
WWW_DIR=${WWW_DIR:-$STATE_DIR/www}

# A Python 3.11 with venv on the host (Debian's, as in the image) for pip on the host side.
HOST_PY=/usr/bin/python3
host_pip_venv() {
  local dir=$1
  [[ -x $HOST_PY ]] || die "$HOST_PY missing"
  "$HOST_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$HOST_PY is not Python 3.11 (bookworm's); wheels would not match the image"
  "$HOST_PY" -m venv "$dir" || die "cannot create a venv (package python3-venv)"
}

# --- --relock: resolve requirements.in into requirements.txt (pins + sha256, wheels only) -

if ((RELOCK)); then
  work=$(mktemp -d "${TMPDIR:-/tmp}/gpufleet-relock.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  host_pip_venv "$work/venv"
  log "resolving $WB/requirements.in (torch from $WHEELS)"
  "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --dry-run \
    --ignore-installed --only-binary :all: --find-links "$WHEELS" \
    --report "$work/report.json" -r "$WB/requirements.in"
  "$work/venv/bin/python" - "$work/report.json" >"$work/requirements.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print("# Lock for the STAND-IN pytorch workbench image, generated from requirements.in by")
print("#   lab/standin/build-workbench-image.sh --relock")
print("# for CPython 3.11 on x86_64 (Debian bookworm). Do not edit by hand.")
rows = []
for item in report["install"]:
    meta, info = item["metadata"], item["download_info"]
    archive = info.get("archive_info", {})
    digest = archive.get("hashes", {}).get("sha256")
    if not digest and archive.get("hash", "").startswith("sha256="):
        digest = archive["hash"].split("=", 1)[1]
    if not digest:
        sys.exit(f"no sha256 for {meta['name']}")
    rows.append((meta["name"].lower().replace("_", "-"), meta["version"], digest))
for name, version, digest in sorted(rows):
    print(f"{name}=={version} \\\n    --hash=sha256:{digest}")
EOF
  grep -q '^torch==.*+cpu ' "$work/requirements.txt" || die "the lock has no CPU torch build"
  install -m 0644 "$work/requirements.txt" "$WB/requirements.txt"
  log "wrote $WB/requirements.txt ($(grep -c '==' "$WB/requirements.txt") packages)"
  exit 0
fi

# --- checks, lock, inputs ----------------------------------------------------------------

[[ -n $REGISTRY ]] || die "--registry HOST:PORT is required (see --help)"
[[ -n $WWW_URL ]] || die "--www-url URL is required (see --help)"
for tool in debootstrap chroot curl flock sha256sum tar; do
  command -v "$tool" >/dev/null || die "$tool not found; run: lab/lab.sh prereqs"
done
if ! [[ -x $DOCKER ]] || ! "$DOCKER" info >/dev/null 2>&1; then
  die "docker does not answer; run: lab/lab.sh prereqs"
fi
[[ -d $WWW_DIR ]] || die "$WWW_DIR missing; run: lab/lab.sh registry"
[[ -f $WB/requirements.txt ]] || die "$WB/requirements.txt missing; run: $0 --relock"
curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/" || die "no registry at $REGISTRY; run: lab/lab.sh registry"

mkdir -p "$RUN_DIR" "$LOG_DIR"
exec 8>"$RUN_DIR/workbench.lock"
flock -w 900 8 || die "another build holds $RUN_DIR/workbench.lock"

# The two versions the image is about, from the lock.
lock_version() {
  awk -v p="$1==" 'index($1, p) == 1 {print substr($1, length(p) + 1); exit}' "$WB/requirements.txt"
}
TORCH_VERSION=$(lock_version torch)
JUPYTERLAB_VERSION=$(lock_version jupyterlab)
[[ $TORCH_VERSION == *+cpu && -n $JUPYTERLAB_VERSION ]] || die "requirements.txt lacks torch (+cpu) or jupyterlab"

inputs_hash() {
  {
    printf 'format 1\nsuite %s\npackages %s\n' "$SUITE" "$PACKAGES"
    sha256sum <"$SELF"
    (cd "$WB" && find . -type f ! -name '*~' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}
HASH=$(inputs_hash)

image_label() { "$DOCKER" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }

# --- build -------------------------------------------------------------------------------

BUILD_ROOT=
cleanup() {
  [[ -n $BUILD_ROOT && -d $BUILD_ROOT ]] || return 0
  local m
  # debootstrap may leave proc/sys mounted inside the target; never recurse into a mount.
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
    awk -v root="$BUILD_ROOT" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r
  )
  rm -rf --one-file-system "$BUILD_ROOT"
  BUILD_ROOT=
}
trap cleanup EXIT

# Wheels for the lock, downloaded on the host into a cache named by the lock's hash (a
# rebuild with the same lock needs no network for them); other lock's caches are removed.
fetch_wheels() {
  local lock_hash cache dir
  lock_hash=$(sha256sum <"$WB/requirements.txt" | cut -c1-16)
  cache=$STATE_DIR/workbench-wheels/$lock_hash
  for dir in "$STATE_DIR"/workbench-wheels/*; do
    [[ ! -d $dir || $dir == "$cache" ]] || rm -rf "$dir"
  done
  if [[ ! -f $cache/.complete ]]; then
    log "downloading wheels (PyPI, torch from $WHEELS) into $cache"
    mkdir -p "$cache"
    host_pip_venv "$BUILD_ROOT/pip"
    if ! "$BUILD_ROOT/pip/bin/python" -m pip download --disable-pip-version-check \
      --only-binary :all: --no-deps --require-hashes --find-links "$WHEELS" \
      --dest "$cache" -r "$WB/requirements.txt" >"$LOG_DIR/workbench-download.log" 2>&1; then
      tail -n 20 "$LOG_DIR/workbench-download.log" >&2
      die "pip download failed (log $LOG_DIR/workbench-download.log)"
    fi
    touch "$cache/.complete"
  fi
  WHEEL_CACHE=$cache
}

# Trim what a container does not need: apt lists and caches, logs, docs (copyright kept),
# man pages, locales, state the package scripts left in /run, and the C++ test programs the
# torch wheel carries (torch/test, torch/bin/test_*: ~120 MB); and what must not be baked
# in: ssh host keys, machine id, host names.
trim_rootfs() {
  local r=$1 torch
  torch=$(echo "$r$VENV"/lib/python3*/site-packages/torch)
  [[ -d $torch ]] || die "no torch package under $VENV"
  rm -rf "$torch/test" "$torch"/bin/test_* "$torch"/bin/*Test
  find "$r/run" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} +
  rm -f "$r"/etc/ssh/ssh_host_*
  rm -f "$r/var/lib/dbus/machine-id"
  [[ ! -e $r/etc/machine-id ]] || : >"$r/etc/machine-id"
  : >"$r/etc/resolv.conf" # docker bind-mounts its own
  rm -f "$r/etc/hostname"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/cache/debconf/*-old "$r"/var/log/*.log "$r"/var/log/apt/* \
    "$r"/root/.cache "$r"/tmp/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
    "$r"/usr/share/locale/* "$r"/usr/share/lintian/*
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  mkdir -p "$r/workspace"
  # sshd refuses to start without its privilege-separation directory, which a service
  # manager would create; an empty one keeps `sshd -D` working in a plain container.
  install -d -m 0755 "$r/run/sshd"
}

build_image() {
  local start rootfs id r
  start=$SECONDS
  mkdir -p "$STATE_DIR/debootstrap-cache"
  BUILD_ROOT=$(mktemp -d "$STATE_DIR/build-workbench.XXXXXX")
  rootfs=$BUILD_ROOT/rootfs
  fetch_wheels

  log "debootstrap $SUITE ($PACKAGES) from $MIRROR (log $LOG_DIR/workbench-build.log)"
  if ! nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" \
    --cache-dir="$STATE_DIR/debootstrap-cache" "$SUITE" "$rootfs" "$MIRROR" \
    >"$LOG_DIR/workbench-build.log" 2>&1; then
    tail -n 20 "$LOG_DIR/workbench-build.log" >&2
    die "debootstrap failed"
  fi

  log "venv $VENV and pip install --no-index (torch $TORCH_VERSION, jupyterlab $JUPYTERLAB_VERSION)"
  mkdir -p "$rootfs/tmp/wheels"
  cp -al "$WHEEL_CACHE"/*.whl "$rootfs/tmp/wheels/" 2>/dev/null || cp "$WHEEL_CACHE"/*.whl "$rootfs/tmp/wheels/"
  cp "$WB/requirements.txt" "$rootfs/tmp/requirements.txt"
  in_root() {
    nice -n 10 chroot "$rootfs" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
      PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore "$@"
  }
  if ! {
    in_root /usr/bin/python3 -m venv "$VENV" &&
      in_root "$VENV/bin/python" -m pip install --no-index --find-links /tmp/wheels \
        --only-binary :all: --require-hashes -r /tmp/requirements.txt
  } >>"$LOG_DIR/workbench-build.log" 2>&1; then
    tail -n 20 "$LOG_DIR/workbench-build.log" >&2
    die "pip install in the rootfs failed"
  fi
  trim_rootfs "$rootfs"

  log "docker import"
  r=$(nice -n 10 tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
    -c "ENV PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PYTORCH_VERSION=${TORCH_VERSION%+*} NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility" \
    -c 'WORKDIR /workspace' \
    -c 'CMD ["python3", "-c", "import torch; print(torch.__version__)"]' \
    -c 'LABEL gpufleet.lab=1' \
    -c "LABEL gpufleet.lab.inputs=$HASH" \
    -c "LABEL gpufleet.lab.torch=$TORCH_VERSION gpufleet.lab.jupyterlab=$JUPYTERLAB_VERSION" \
    -c "LABEL org.opencontainers.image.title=\"$TITLE\"" \
    -c "LABEL org.opencontainers.image.description=\"gpufleet lab stand-in, NOT the pytorch/pytorch image: Debian $SUITE, venv $VENV (torch $TORCH_VERSION, JupyterLab $JUPYTERLAB_VERSION), openssh-server without host keys\"" \
    -c "LABEL org.opencontainers.image.version=$TAG" \
    -)
  id=${r##*$'\n'}
  cleanup

  verify_image "$id"
  local old
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$LOCAL_IMAGE" 2>/dev/null) || old=
  "$DOCKER" tag "$id" "$LOCAL_IMAGE"
  "$DOCKER" tag "$id" "$REGISTRY/$IMAGE_PATH:$TAG"
  # The previous build (ours: same tag, lab label) would be left dangling at ~1 GB.
  if [[ -n $old && $old != "$id" && $(image_label "$old" gpufleet.lab) == 1 ]]; then
    "$DOCKER" rmi "$old" >/dev/null 2>&1 || log "note: previous build $old still in use; left"
  fi
  log "built $LOCAL_IMAGE in $((SECONDS - start)) s"
}

# The checks a role's tests rely on, run without network before anything is published.
verify_image() {
  local id=$1 out
  out=$("$DOCKER" run --rm --network none "$id" python3 -c \
    'import torch, jupyterlab, numpy; print(torch.__version__, jupyterlab.__version__)') ||
    die "image $id: import check failed"
  [[ $out == "$TORCH_VERSION $JUPYTERLAB_VERSION" ]] ||
    die "image $id: expected '$TORCH_VERSION $JUPYTERLAB_VERSION', got '$out'"
  # shellcheck disable=SC2016 # $t is the container shell's
  out=$("$DOCKER" run --rm --network none "$id" sh -c \
    'for t in sshd tini python3 jupyter-lab ps; do command -v "$t"; done | paste -sd" " -; ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l') ||
    die "image $id: tool check failed"
  [[ $out == "/usr/sbin/sshd /usr/bin/tini $VENV/bin/python3 $VENV/bin/jupyter-lab /usr/bin/ps"$'\n'0 ]] ||
    die "image $id: unexpected tools or ssh host keys: $out"
  out=$("$DOCKER" run --rm --network none "$id") || die "image $id: default command failed"
  [[ $out == "$TORCH_VERSION" ]] || die "image $id: default command printed '$out'"
  log "checked: torch $TORCH_VERSION, jupyterlab $JUPYTERLAB_VERSION, sshd, tini, no host keys"
}

# --- registry ----------------------------------------------------------------------------

# The registry's digest of the tag's manifest; empty when it has none.
registry_digest() {
  local headers
  headers=$(curl -fsSI --max-time 10 -H "Accept: $MANIFEST_V2" \
    "http://$REGISTRY/v2/$IMAGE_PATH/manifests/$TAG" 2>/dev/null) || return 0
  awk 'tolower($1) == "docker-content-digest:" {sub(/\r$/, "", $2); print $2}' <<<"$headers"
}

# Does the host dockerd treat $REGISTRY as an insecure (plain HTTP) registry?
daemon_trusts() {
  "$DOCKER" info --format '{{json .RegistryConfig}}' | "$HOST_PY" "$RELAY_HELPER" trusts "$REGISTRY"
}

# The digest docker recorded for $1 (a pushed name:tag), empty if none.
pushed_digest() {
  "$DOCKER" image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$1" 2>/dev/null |
    awk -v repo="${1%:*}@" 'index($0, repo) == 1 {print substr($0, length(repo) + 1); exit}'
}

# Pushes and sets PUSHED_DIGEST, the manifest digest docker pushed.
PUSHED_DIGEST=
push_image() {
  local start=$SECONDS ref relay_pid ready=
  if [[ ${LAB_PUSH_RELAY:-0} != 1 ]] && daemon_trusts; then
    ref=$REGISTRY/$IMAGE_PATH:$TAG
    log "pushing $ref"
    "$DOCKER" tag "$LOCAL_IMAGE" "$ref"
    "$DOCKER" push --quiet "$ref" >/dev/null || die "push failed"
    PUSHED_DIGEST=$(pushed_digest "$ref")
  else
    log "pushing through the loopback relay 127.0.0.1:$RELAY_PORT"
    ref=127.0.0.1:$RELAY_PORT/$IMAGE_PATH:$TAG
    coproc "$HOST_PY" "$RELAY_HELPER" relay "${REGISTRY%:*}" "${REGISTRY##*:}" "$RELAY_PORT" 2>&1 8>&-
    relay_pid=$COPROC_PID
    read -r -t 10 ready <&"${COPROC[0]}" || true
    [[ $ready == ready ]] || die "loopback relay did not start (is 127.0.0.1:$RELAY_PORT free?)"
    "$DOCKER" tag "$LOCAL_IMAGE" "$ref"
    if ! "$DOCKER" push --quiet "$ref" >/dev/null; then
      kill "$relay_pid" 2>/dev/null || true
      die "push through the relay failed"
    fi
    PUSHED_DIGEST=$(pushed_digest "$ref") # before the untag drops it
    "$DOCKER" rmi "$ref" >/dev/null
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  log "pushed in $((SECONDS - start)) s"
}

# --- archive and description -------------------------------------------------------------

json_field() { "$HOST_PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2" 2>/dev/null || true; }

# The archive matches when the description names this image id and the file has its size.
ensure_archive() {
  local id=$1 dir=$WWW_DIR/images tar json tmp start=$SECONDS
  tar=$dir/$ARCHIVE_NAME.tar
  json=$dir/$ARCHIVE_NAME.json
  mkdir -p "$dir"
  if [[ -f $tar && -f $json && $(json_field "$json" image_id) == "$id" &&
    $(json_field "$json" archive_size) == "$(stat -c %s "$tar")" ]]; then
    ARCHIVE_SHA256=$(json_field "$json" archive_sha256)
    ARCHIVE_SIZE=$(stat -c %s "$tar")
    [[ -n $ARCHIVE_SHA256 ]] && return 0
  fi
  log "docker save $LOCAL_IMAGE > $tar"
  tmp=$(mktemp "$dir/.$ARCHIVE_NAME.tar.XXXXXX")
  if ! "$DOCKER" save "$LOCAL_IMAGE" >"$tmp"; then
    rm -f "$tmp"
    die "docker save failed"
  fi
  chmod 0644 "$tmp"
  ARCHIVE_SHA256=$(sha256sum <"$tmp" | cut -d' ' -f1)
  ARCHIVE_SIZE=$(stat -c %s "$tmp")
  mv -f "$tmp" "$tar"
  log "saved $((ARCHIVE_SIZE / 1048576)) MiB in $((SECONDS - start)) s"
}

write_json() {
  local json=$WWW_DIR/images/$ARCHIVE_NAME.json tmp
  tmp=$(mktemp "$json.XXXXXX")
  "$HOST_PY" - "$tmp" <<EOF
import json, sys
doc = {
    "repository": "$REGISTRY/$IMAGE_PATH",
    "tag": "$TAG",
    "digest": "$DIGEST",
    "image_id": "$IMAGE_ID",
    "archive_url": "${WWW_URL%/}/images/$ARCHIVE_NAME.tar",
    "archive_sha256": "$ARCHIVE_SHA256",
    "archive_size": $ARCHIVE_SIZE,
    "archive_ref": "$LOCAL_IMAGE",
    "torch": "$TORCH_VERSION",
    "jupyterlab": "$JUPYTERLAB_VERSION",
    "inputs": "$HASH",
    "note": "$TITLE: a gpufleet lab stand-in, not the pytorch/pytorch image",
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
  if [[ -f $json ]] && cmp -s "$tmp" "$json"; then
    rm -f "$tmp"
  else
    chmod 0644 "$tmp"
    mv -f "$tmp" "$json"
    log "wrote $json"
  fi
}

# --- main --------------------------------------------------------------------------------

if ((!FORCE)) && [[ $(image_label "$LOCAL_IMAGE" gpufleet.lab.inputs) == "$HASH" ]]; then
  log "image $LOCAL_IMAGE up to date (inputs $HASH)"
else
  build_image
fi
IMAGE_ID=$("$DOCKER" image inspect -f '{{.Id}}' "$LOCAL_IMAGE")

# In the registry when the tag's manifest is one this image was pushed as: docker's record
# of the push (RepoDigests), or the description written after an earlier verified push.
in_registry() {
  [[ -n $DIGEST ]] || return 1
  "$DOCKER" image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$LOCAL_IMAGE" |
    grep -qF "/$IMAGE_PATH@$DIGEST" && return 0
  local json=$WWW_DIR/images/$ARCHIVE_NAME.json
  [[ -f $json && $(json_field "$json" image_id) == "$IMAGE_ID" &&
    $(json_field "$json" digest) == "$DIGEST" ]]
}
DIGEST=$(registry_digest)
if ! in_registry; then
  push_image
  DIGEST=$(registry_digest)
  [[ $DIGEST == sha256:* ]] || die "registry has no manifest for $IMAGE_PATH:$TAG after the push"
  [[ $DIGEST == "$PUSHED_DIGEST" ]] ||
    die "registry digest $DIGEST is not the one pushed (${PUSHED_DIGEST:-none})"
else
  log "registry holds $IMAGE_PATH:$TAG ($DIGEST)"
fi
"$DOCKER" tag "$LOCAL_IMAGE" "$REGISTRY/$IMAGE_PATH:$TAG" # also after a change of address

ensure_archive "$IMAGE_ID"
write_json

log "registry: $REGISTRY/$IMAGE_PATH:$TAG"
log "digest:   $REGISTRY/$IMAGE_PATH@$DIGEST"
log "archive:  ${WWW_URL%/}/images/$ARCHIVE_NAME.tar (image id $IMAGE_ID)"
log "size:     $("$DOCKER" image inspect -f '{{.Size}}' "$LOCAL_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
