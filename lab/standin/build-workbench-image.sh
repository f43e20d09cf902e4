#!/usr/bin/env bash
# Builds the lab's STAND-INs for the pytorch/pytorch images, which cannot be pulled here.
# Neither is a pytorch/pytorch image: each is a Debian bookworm rootfs (debootstrap minbase)
# with a venv at /opt/pytorch (first on PATH, as /opt/conda/bin is in the real image) holding
# the CPU build of torch and numpy, pinned with hashes in FLAVOUR/requirements.txt. No users,
# no service configuration: roles mount those at run time. Two flavours:
#
#   workbench (default)  KINDER than the official image: also JupyterLab, openssh-server (no
#                        host keys) and tini, so roles can run the Jupyter and SSH services
#                        from it directly. Published in the lab registry and as a `docker
#                        save` archive on the lab web server.
#   runtime              shaped like the official pytorch/pytorch:*-runtime image: python3
#                        and pip in the venv, ca-certificates and procps; NO JupyterLab, NO
#                        openssh-server, no tini. Roles build the workbench FROM it, with
#                        openssh-server from the image's own apt sources and JupyterLab from
#                        a pip index, as a site does with the official image and its own
#                        mirrors. The lab's stand-ins for those mirrors come with it: the
#                        image's apt sources point only at the lab's apt repository (signed
#                        with the lab key, which the image holds as a signed-by keyring),
#                        which holds openssh-server and exactly the packages the image lacks
#                        for it; the lab's PyPI index holds JupyterLab and its dependencies as
#                        pinned in workbench/requirements.txt. Published in the registry only.
#
# The build runs no network inside a container: wheels (PyPI and pip's find-links folder)
# and the runtime's extra .debs (Debian's archive) are downloaded on the host, wheels are
# installed with pip --no-index in a chroot, and the rootfs goes in with `docker import`. Each
# image carries the sha256 of its inputs (this script and FLAVOUR/; for the runtime also the
# signing key and the lab URLs baked into it) in the label gpufleet.lab.inputs; a re-run with
# the same inputs does not rebuild, it only makes sure the registry (and archive) hold it.
#
# Publishes:
#   workbench  REGISTRY/lab/pytorch-workbench:2.13-cpu-standin  (and @sha256:... by digest)
#              WWW/images/pytorch-workbench-standin.tar          (docker save; tag inside:
#                                                                 gpufleet-lab/pytorch-workbench:2.13-cpu-standin)
#              WWW/images/pytorch-workbench-standin.json         (references, digest, image id)
#   runtime    REGISTRY/lab/pytorch:2.13-cpu-runtime-standin     (and @sha256:... by digest)
#              WWW/images/pytorch-runtime-standin.json           (references, digest, image id)
#              WWW/apt-standin/      apt repository: deb WWW-URL/apt-standin bookworm main
#              WWW/pypi/simple/      PEP 503 index (files in WWW/pypi/files/)
#
# usage: build-workbench-image.sh [--flavour workbench|runtime] --registry HOST:PORT
#                                 --www-url URL [--www DIR] [--state-dir DIR] [--docker CLI]
#                                 [--gnupghome DIR] [--key USER-ID] [--force]
#        build-workbench-image.sh [--flavour workbench|runtime] --relock
#                                 (re-resolve FLAVOUR/requirements.txt from requirements.in)
# lab/lab.sh standin-image passes the lab's values. --gnupghome and --key name the lab's
# signing key (runtime; default STATE-DIR/gnupg, lab-archive@gpufleet.invalid). LAB_MIRROR
# sets the Debian mirror, LAB_WHEELS the folder with the CPU torch wheel (default /opt/wheels),
# LAB_PUSH_RELAY=1 forces the push through the loopback relay (otherwise used only when
# dockerd does not trust the registry).
set -euo pipefail
umask 022

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
RELAY_HELPER=$HERE/../registry_relay.py # shared with lab/lab.sh
SELF=$HERE/$(basename -- "${BASH_SOURCE[0]}")

STATE_DIR=/var/lib/gpufleet-lab
WWW_DIR=
WWW_URL=
REGISTRY=
GNUPG_DIR=
KEY=lab-archive@gpufleet.invalid
DOCKER=${LAB_DOCKER:-/usr/bin/docker}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
WHEELS=${LAB_WHEELS:-/opt/wheels}
RUN_DIR=${GPUFLEET_LAB_RUN_DIR:-/run/gpufleet-lab}
LOG_DIR=/var/log/gpufleet-lab
FLAVOUR=workbench
FORCE=0
RELOCK=0

SUITE=bookworm
ARCH=amd64
VENV=/opt/pytorch
MANIFEST_V2=application/vnd.docker.distribution.manifest.v2+json
RELAY_PORT=5000

log() { printf 'lab: %s: %s\n' "$FLAVOUR" "$*"; }
die() {
  printf 'lab: %s: error: %s\n' "$FLAVOUR" "$*" >&2
  exit 1
}

while (($#)); do
  case $1 in
  --flavour) FLAVOUR=${2:?--flavour needs workbench or runtime} && shift 2 ;;
  --registry) REGISTRY=${2:?--registry needs HOST:PORT} && shift 2 ;;
  --www) WWW_DIR=${2:?--www needs a directory} && shift 2 ;;
  --www-url) WWW_URL=${2:?--www-url needs a URL} && shift 2 ;;
  --state-dir) STATE_DIR=${2:?--state-dir needs a directory} && shift 2 ;;
  --docker) DOCKER=${2:?--docker needs a path} && shift 2 ;;
  --gnupghome) GNUPG_DIR=${2:?--gnupghome needs a directory} && shift 2 ;;
  --key) KEY=${2:?--key needs a user id} && shift 2 ;;
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
GNUPG_DIR=${GNUPG_DIR:-$STATE_DIR/gnupg}

# --- flavours ----------------------------------------------------------------------------

WORKBENCH_LOCK=$HERE/workbench/requirements.txt # also the pins of the lab's PyPI index
case $FLAVOUR in
workbench)
  LOCK_DIR=$HERE/workbench
  PACKAGES=python3,python3-venv,openssh-server,ca-certificates,tini,procps
  IMAGE_PATH=lab/pytorch-workbench # repository path in the registry
  TAG=2.13-cpu-standin
  LOCAL_IMAGE=gpufleet-lab/pytorch-workbench:$TAG
  ARCHIVE_NAME=pytorch-workbench-standin # images/NAME.tar and images/NAME.json
  TITLE='STAND-IN for pytorch/pytorch (CPU torch 2.13, JupyterLab, openssh-server)'
  RELOCK_CONSTRAINTS=
  ;;
runtime)
  LOCK_DIR=$HERE/runtime
  PACKAGES=python3,python3-venv,ca-certificates,procps
  IMAGE_PATH=lab/pytorch
  TAG=2.13-cpu-runtime-standin
  LOCAL_IMAGE=gpufleet-lab/pytorch:$TAG
  ARCHIVE_NAME=pytorch-runtime-standin # images/NAME.json only: no archive
  TITLE='STAND-IN for pytorch/pytorch runtime (CPU torch 2.13; no JupyterLab, no openssh-server)'
  # The same versions and hashes as the workbench: the two differ only in what they add.
  RELOCK_CONSTRAINTS=$WORKBENCH_LOCK
  ;;
*) die "unknown flavour '$FLAVOUR' (workbench or runtime)" ;;
esac
JSON_PATH=$WWW_DIR/images/$ARCHIVE_NAME.json

# A Python 3.11 with venv on the host (Debian's, as in the image) for pip on the host side.
HOST_PY=/usr/bin/python3
host_pip_venv() {
  local dir=$1
  [[ -x $HOST_PY ]] || die "$HOST_PY missing"
  "$HOST_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$HOST_PY is not Python 3.11 (bookworm's); wheels would not match the image"
  "$HOST_PY" -m venv "$dir" || die "cannot create a venv (package python3-venv)"
}

# "name==version sha256" of each package of a lock, sorted.
lock_pins() {
  awk '/^[A-Za-z0-9].*==/ {pin = $1} /--hash=sha256:/ {sub(/.*--hash=sha256:/, ""); print pin, $1}' "$1" |
    LC_ALL=C sort
}

# --- --relock: resolve requirements.in into requirements.txt (pins + sha256, wheels only) -

if ((RELOCK)); then
  work=$(mktemp -d "${TMPDIR:-/tmp}/gpufleet-relock.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  host_pip_venv "$work/venv"
  constraints=()
  if [[ -n $RELOCK_CONSTRAINTS ]]; then
    # Pins only: pip takes hashes in a constraints file as --require-hashes for the input.
    awk '/^[A-Za-z0-9].*==/ {print $1}' "$RELOCK_CONSTRAINTS" >"$work/constraints.txt"
    constraints=(-c "$work/constraints.txt")
  fi
  log "resolving $LOCK_DIR/requirements.in (torch from $WHEELS)"
  "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --dry-run \
    --ignore-installed --only-binary :all: --find-links "$WHEELS" \
    --report "$work/report.json" "${constraints[@]}" -r "$LOCK_DIR/requirements.in"
  relock_cmd="lab/standin/build-workbench-image.sh --relock"
  [[ $FLAVOUR == workbench ]] || relock_cmd="lab/standin/build-workbench-image.sh --flavour $FLAVOUR --relock"
  "$work/venv/bin/python" - "$work/report.json" "$FLAVOUR" "$relock_cmd" >"$work/requirements.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"# Lock for the STAND-IN pytorch {sys.argv[2]} image, generated from requirements.in by")
print(f"#   {sys.argv[3]}")
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
  if [[ -n $RELOCK_CONSTRAINTS ]]; then
    differ=$(LC_ALL=C comm -23 <(lock_pins "$work/requirements.txt") <(lock_pins "$RELOCK_CONSTRAINTS"))
    [[ -z $differ ]] || die "pins or hashes not as in $RELOCK_CONSTRAINTS: $differ"
  fi
  install -m 0644 "$work/requirements.txt" "$LOCK_DIR/requirements.txt"
  log "wrote $LOCK_DIR/requirements.txt ($(grep -c '==' "$LOCK_DIR/requirements.txt") packages)"
  exit 0
fi

# --- checks, lock, inputs ----------------------------------------------------------------

[[ -n $REGISTRY ]] || die "--registry HOST:PORT is required (see --help)"
[[ -n $WWW_URL ]] || die "--www-url URL is required (see --help)"
tools=(debootstrap chroot curl flock sha256sum tar)
[[ $FLAVOUR != runtime ]] || tools+=(dpkg-deb gpg gpgv gpgconf gzip md5sum sha1sum sha512sum)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool not found; run: lab/lab.sh prereqs"
done
if ! [[ -x $DOCKER ]] || ! "$DOCKER" info >/dev/null 2>&1; then
  die "docker does not answer; run: lab/lab.sh prereqs"
fi
[[ -d $WWW_DIR ]] || die "$WWW_DIR missing; run: lab/lab.sh registry"
[[ -f $LOCK_DIR/requirements.txt ]] || die "$LOCK_DIR/requirements.txt missing; run: $0 --flavour $FLAVOUR --relock"
curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/" || die "no registry at $REGISTRY; run: lab/lab.sh registry"

mkdir -p "$RUN_DIR" "$LOG_DIR"
# One lock for both flavours: they share the debootstrap cache and the workbench's wheels.
exec 8>"$RUN_DIR/workbench.lock"
flock -w 900 8 || die "another build holds $RUN_DIR/workbench.lock"

# The versions the image is about, from a lock (default: the flavour's).
lock_version() {
  awk -v p="$1==" 'index($1, p) == 1 {print substr($1, length(p) + 1); exit}' "${2:-$LOCK_DIR/requirements.txt}"
}
TORCH_VERSION=$(lock_version torch)
case $FLAVOUR in
workbench)
  JUPYTERLAB_VERSION=$(lock_version jupyterlab)
  [[ $TORCH_VERSION == *+cpu && -n $JUPYTERLAB_VERSION ]] || die "requirements.txt lacks torch (+cpu) or jupyterlab"
  DESCRIPTION="gpufleet lab stand-in, NOT the pytorch/pytorch image: Debian $SUITE, venv $VENV (torch $TORCH_VERSION, JupyterLab $JUPYTERLAB_VERSION), openssh-server without host keys"
  ;;
runtime)
  NUMPY_VERSION=$(lock_version numpy)
  JUPYTERLAB_VERSION=$(lock_version jupyterlab "$WORKBENCH_LOCK") # what the PyPI index serves
  [[ $TORCH_VERSION == *+cpu && -n $NUMPY_VERSION ]] || die "requirements.txt lacks torch (+cpu) or numpy"
  [[ -z $(lock_version jupyterlab) ]] || die "requirements.txt has jupyterlab; the runtime flavour must not"
  [[ -n $JUPYTERLAB_VERSION ]] || die "$WORKBENCH_LOCK lacks jupyterlab (the PyPI index serves it)"
  # The lab's mirrors, as a site's would be baked into its images.
  APT_NAME=apt-standin
  APT_URL=${WWW_URL%/}/$APT_NAME
  APT_SOURCES=/etc/apt/sources.list.d/gpufleet-lab-standin.sources
  APT_KEYRING=/etc/apt/keyrings/gpufleet-lab-standin.gpg
  PYPI_NAME=pypi
  PIP_INDEX_URL=${WWW_URL%/}/$PYPI_NAME/simple
  PIP_TRUSTED_HOST=${WWW_URL#*://}
  PIP_TRUSTED_HOST=${PIP_TRUSTED_HOST%%/*}
  DESCRIPTION="gpufleet lab stand-in, NOT the pytorch/pytorch image: Debian $SUITE, venv $VENV (torch $TORCH_VERSION, numpy $NUMPY_VERSION), shaped like the runtime image: no JupyterLab, no openssh-server; apt only from the lab's STAND-IN repository $APT_URL"
  # The public key ring only: --list-secret-keys would start a gpg-agent on the lab's
  # GNUPGHOME. Signing (from a private copy) fails if the secret key is missing.
  FPR=$(gpg --homedir "$GNUPG_DIR" --batch --with-colons --list-keys "$KEY" 2>/dev/null |
    awk -F: '$1 == "fpr" {print $10; exit}') || true
  [[ -n $FPR ]] || die "no key '$KEY' in $GNUPG_DIR; run: lab/lab.sh registry"
  ;;
esac

inputs_hash() {
  {
    printf 'format 1\nsuite %s\npackages %s\n' "$SUITE" "$PACKAGES"
    if [[ $FLAVOUR != workbench ]]; then
      printf 'flavour %s\napt %s\nkey %s\n' "$FLAVOUR" "$APT_URL" "$FPR"
    fi
    sha256sum <"$SELF"
    (cd "$LOCK_DIR" && find . -type f ! -name '*~' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}
HASH=$(inputs_hash)

image_label() { "$DOCKER" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }

# --- build -------------------------------------------------------------------------------

BUILD_ROOT=
cleanup() {
  [[ -n $BUILD_ROOT && -d $BUILD_ROOT ]] || return 0
  local m
  if [[ -d $BUILD_ROOT/gnupg ]]; then
    gpgconf --homedir "$BUILD_ROOT/gnupg" --kill gpg-agent 2>/dev/null || true
  fi
  # debootstrap may leave proc/sys mounted inside the target; never recurse into a mount.
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
    awk -v root="$BUILD_ROOT" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r
  )
  rm -rf --one-file-system "$BUILD_ROOT"
  BUILD_ROOT=
}
STAGED=() # published-to-be folders under WWW_DIR, removed unless published
cleanup_all() {
  cleanup
  local dir
  for dir in "${STAGED[@]}"; do rm -rf "$dir"; done
}
trap cleanup_all EXIT

# fetch_wheels LOCK CACHE-ROOT LOG-NAME: the wheels of LOCK, downloaded on the host into
# CACHE-ROOT/<the lock's hash> (a rebuild with the same lock needs no network for them);
# other locks' caches under CACHE-ROOT are removed. Sets WHEEL_CACHE. Needs BUILD_ROOT.
fetch_wheels() {
  local lock=$1 root=$2 name=$3 lock_hash cache dir
  lock_hash=$(sha256sum <"$lock" | cut -c1-16)
  cache=$root/$lock_hash
  for dir in "$root"/*; do
    [[ ! -d $dir || $dir == "$cache" ]] || rm -rf "$dir"
  done
  if [[ ! -f $cache/.complete ]]; then
    log "downloading wheels (PyPI, torch from $WHEELS) into $cache"
    mkdir -p "$cache"
    [[ -x $BUILD_ROOT/pip/bin/python ]] || host_pip_venv "$BUILD_ROOT/pip"
    if ! "$BUILD_ROOT/pip/bin/python" -m pip download --disable-pip-version-check \
      --only-binary :all: --no-deps --require-hashes --find-links "$WHEELS" \
      --dest "$cache" -r "$lock" >"$LOG_DIR/$name-download.log" 2>&1; then
      tail -n 20 "$LOG_DIR/$name-download.log" >&2
      die "pip download failed (log $LOG_DIR/$name-download.log)"
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
  if [[ $FLAVOUR == workbench ]]; then
    # sshd refuses to start without its privilege-separation directory, which a service
    # manager would create; an empty one keeps `sshd -D` working in a plain container.
    install -d -m 0755 "$r/run/sshd"
  fi
}

# in_root ROOTFS COMMAND...: run COMMAND in a chroot of ROOTFS, with a clean environment.
in_root() {
  local r=$1
  shift
  nice -n 10 chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore "$@"
}

build_image() {
  local start rootfs id r old
  start=$SECONDS
  mkdir -p "$STATE_DIR/debootstrap-cache"
  BUILD_ROOT=$(mktemp -d "$STATE_DIR/build-$FLAVOUR.XXXXXX")
  rootfs=$BUILD_ROOT/rootfs
  fetch_wheels "$LOCK_DIR/requirements.txt" "$STATE_DIR/$FLAVOUR-wheels" "$FLAVOUR"

  log "debootstrap $SUITE ($PACKAGES) from $MIRROR (log $LOG_DIR/$FLAVOUR-build.log)"
  if ! nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" \
    --cache-dir="$STATE_DIR/debootstrap-cache" "$SUITE" "$rootfs" "$MIRROR" \
    >"$LOG_DIR/$FLAVOUR-build.log" 2>&1; then
    tail -n 20 "$LOG_DIR/$FLAVOUR-build.log" >&2
    die "debootstrap failed"
  fi
  [[ $FLAVOUR != runtime ]] || download_openssh_debs "$rootfs" "$BUILD_ROOT/debs"

  if [[ $FLAVOUR == workbench ]]; then
    log "venv $VENV and pip install --no-index (torch $TORCH_VERSION, jupyterlab $JUPYTERLAB_VERSION)"
  else
    log "venv $VENV and pip install --no-index (torch $TORCH_VERSION, numpy $NUMPY_VERSION)"
  fi
  mkdir -p "$rootfs/tmp/wheels"
  cp -al "$WHEEL_CACHE"/*.whl "$rootfs/tmp/wheels/" 2>/dev/null || cp "$WHEEL_CACHE"/*.whl "$rootfs/tmp/wheels/"
  cp "$LOCK_DIR/requirements.txt" "$rootfs/tmp/requirements.txt"
  if ! {
    in_root "$rootfs" /usr/bin/python3 -m venv "$VENV" &&
      in_root "$rootfs" "$VENV/bin/python" -m pip install --no-index --find-links /tmp/wheels \
        --only-binary :all: --require-hashes -r /tmp/requirements.txt
  } >>"$LOG_DIR/$FLAVOUR-build.log" 2>&1; then
    tail -n 20 "$LOG_DIR/$FLAVOUR-build.log" >&2
    die "pip install in the rootfs failed"
  fi
  trim_rootfs "$rootfs"
  if [[ $FLAVOUR == runtime ]]; then
    stage_apt_repo "$BUILD_ROOT/debs"
    configure_runtime "$rootfs"
  fi

  log "docker import"
  local changes=(
    -c "ENV PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PYTORCH_VERSION=${TORCH_VERSION%+*} NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility"
    -c 'WORKDIR /workspace'
    -c 'CMD ["python3", "-c", "import torch; print(torch.__version__)"]'
    -c 'LABEL gpufleet.lab=1'
    -c "LABEL gpufleet.lab.inputs=$HASH"
  )
  if [[ $FLAVOUR == workbench ]]; then
    changes+=(-c "LABEL gpufleet.lab.torch=$TORCH_VERSION gpufleet.lab.jupyterlab=$JUPYTERLAB_VERSION")
  else
    changes+=(-c "LABEL gpufleet.lab.torch=$TORCH_VERSION")
  fi
  changes+=(
    -c "LABEL org.opencontainers.image.title=\"$TITLE\""
    -c "LABEL org.opencontainers.image.description=\"$DESCRIPTION\""
    -c "LABEL org.opencontainers.image.version=$TAG"
  )
  r=$(nice -n 10 tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import "${changes[@]}" -)
  id=${r##*$'\n'}
  cleanup

  if [[ $FLAVOUR == workbench ]]; then verify_workbench "$id"; else verify_runtime "$id"; fi
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$LOCAL_IMAGE" 2>/dev/null) || old=
  "$DOCKER" tag "$id" "$LOCAL_IMAGE"
  "$DOCKER" tag "$id" "$REGISTRY/$IMAGE_PATH:$TAG"
  # The previous build (ours: same tag, lab label) would be left dangling at ~1 GB.
  if [[ -n $old && $old != "$id" && $(image_label "$old" gpufleet.lab) == 1 ]]; then
    "$DOCKER" rmi "$old" >/dev/null 2>&1 || log "note: previous build $old still in use; left"
  fi
  [[ $FLAVOUR != runtime ]] || publish_staged "$APT_NAME" "$APT_STAGE"
  log "built $LOCAL_IMAGE in $((SECONDS - start)) s"
}

# The checks a role's tests rely on, run without network before anything is published.
verify_workbench() {
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

# The runtime's shape (without network), then what the pytorch_image role's build needs of
# it: `apt-get install openssh-server` from its own sources, against the staged repository.
verify_runtime() {
  local id=$1 out want n
  out=$("$DOCKER" run --rm --network none "$id" python3 -c \
    'import torch, numpy; print(torch.__version__, numpy.__version__)') ||
    die "image $id: import check failed"
  [[ $out == "$TORCH_VERSION $NUMPY_VERSION" ]] ||
    die "image $id: expected '$TORCH_VERSION $NUMPY_VERSION', got '$out'"
  if "$DOCKER" run --rm --network none "$id" python3 -c 'import jupyterlab' >/dev/null 2>&1; then
    die "image $id: 'import jupyterlab' works; the runtime has no JupyterLab"
  fi
  out=$("$DOCKER" run --rm --network none "$id" python3 -c \
    'import importlib.util as u; print(*[m for m in ("jupyterlab", "jupyter_server", "jupyter_core", "notebook", "ipykernel") if u.find_spec(m)])') ||
    die "image $id: module check failed"
  [[ -z $out ]] || die "image $id: has Jupyter modules: $out"
  # shellcheck disable=SC2016 # $t is the container shell's
  out=$("$DOCKER" run --rm --network none "$id" sh -c '
    echo "unwanted:$(for t in sshd jupyter jupyter-lab tini; do command -v "$t"; done | paste -sd" " -)"
    echo "sshd:$(ls /usr/sbin/sshd 2>/dev/null)"
    echo "hostkeys:$(ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l)"
    echo "tools:$(for t in python3 ps; do command -v "$t"; done | paste -sd" " -)"
    echo "ca:$(test -s /etc/ssl/certs/ca-certificates.crt && echo ok)"
    echo "pip:$(python3 -m pip --version)"') ||
    die "image $id: tool check failed"
  want="unwanted:"$'\n'"sshd:"$'\n'"hostkeys:0"$'\n'"tools:$VENV/bin/python3 /usr/bin/ps"$'\n'"ca:ok"
  [[ ${out%$'\n'pip:*} == "$want" && ${out##*$'\n'pip:} == "pip "*" from $VENV/"* ]] ||
    die "image $id: unexpected tools, ssh host keys or pip: $out"
  out=$("$DOCKER" run --rm --network none "$id") || die "image $id: default command failed"
  [[ $out == "$TORCH_VERSION" ]] || die "image $id: default command printed '$out'"

  n=$(find "$APT_STAGE/pool" -name '*.deb' | wc -l)
  out=$("$DOCKER" run --rm "$id" sh -c "
    sed -i 's#$APT_URL/#${WWW_URL%/}/${APT_STAGE##*/}/#' $APT_SOURCES
    apt-get update >/tmp/update.log 2>&1 || { cat /tmp/update.log; exit 1; }
    if grep -E '^(W|E|Err):' /tmp/update.log; then exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \
      >/tmp/install.log 2>&1 || { tail -n 20 /tmp/install.log; exit 1; }
    grep -E '^[0-9]+ upgraded, [0-9]+ newly installed' /tmp/install.log
    command -v sshd") ||
    die "image $id: apt-get install openssh-server from the staged repository failed: $out"
  [[ $out == "0 upgraded, $n newly installed, 0 to remove and 0 not upgraded."$'\n'/usr/sbin/sshd ]] ||
    die "image $id: apt-get install openssh-server did not install the $n packages of the repository: $out"
  log "checked: torch $TORCH_VERSION, numpy $NUMPY_VERSION, pip; no JupyterLab, sshd, jupyter, tini, host keys; apt installs openssh-server ($n packages) from the repository"
}

# --- runtime: apt sources, the lab's apt repository ----------------------------------------

# download_openssh_debs ROOTFS DEST: the .debs that `apt-get install --no-install-recommends
# openssh-server` needs on ROOTFS, fetched by the rootfs' own apt from the lists debootstrap
# left (the snapshot the rootfs was installed from, so versions match), with the host's network.
download_openssh_debs() {
  local r=$1 dest=$2
  log "apt-get install --download-only openssh-server in the rootfs"
  cp /etc/resolv.conf "$r/etc/resolv.conf" # trim_rootfs empties it again
  mkdir -p "$r/tmp/debs/partial" "$dest"
  if ! in_root "$r" apt-get install --download-only -y -q --no-install-recommends \
    -o Dir::Cache::Archives=/tmp/debs/ -o APT::Sandbox::User=root openssh-server \
    >>"$LOG_DIR/$FLAVOUR-build.log" 2>&1; then
    tail -n 20 "$LOG_DIR/$FLAVOUR-build.log" >&2
    die "apt-get --download-only openssh-server failed"
  fi
  mv "$r"/tmp/debs/*.deb "$dest/"
  rm -rf "$r/tmp/debs"
}

# Signs with a private copy of the lab key ring and its own agent (as build-toolkit-repo.sh
# does), so that nothing else using the lab's GNUPGHOME is disturbed; cleanup() stops it.
lab_gpg() {
  if [[ ! -d $BUILD_ROOT/gnupg ]]; then
    mkdir -m 0700 "$BUILD_ROOT/gnupg"
    cp -a "$GNUPG_DIR/pubring.kbx" "$GNUPG_DIR/private-keys-v1.d" "$BUILD_ROOT/gnupg/"
    [[ ! -f $GNUPG_DIR/trustdb.gpg ]] || cp -a "$GNUPG_DIR/trustdb.gpg" "$BUILD_ROOT/gnupg/"
  fi
  gpg --homedir "$BUILD_ROOT/gnupg" --batch --quiet --yes --pinentry-mode loopback --passphrase '' "$@"
}

# stage_apt_repo DEBS: the signed repository (a Debian-style archive, one suite, one
# component) in WWW_DIR/.apt-standin.HASH, served there for verify_runtime before it is
# published as WWW_DIR/apt-standin. Sets APT_STAGE.
stage_apt_repo() {
  local debs=$1 tmp deb pkg version arch file f field tool dist comp
  tmp=$(mktemp -d "$WWW_DIR/.$APT_NAME.tmp.XXXXXX")
  STAGED+=("$tmp")
  chmod 0755 "$tmp"
  dist=$tmp/dists/$SUITE
  comp=main/binary-$ARCH
  mkdir -p "$tmp/pool/main" "$dist/$comp"
  for deb in "$debs"/*.deb; do
    pkg=$(dpkg-deb --field "$deb" Package)
    version=$(dpkg-deb --field "$deb" Version)
    arch=$(dpkg-deb --field "$deb" Architecture)
    cp "$deb" "$tmp/pool/main/${pkg}_${version#*:}_$arch.deb"
  done
  {
    for deb in "$tmp"/pool/main/*.deb; do
      file=pool/main/${deb##*/}
      dpkg-deb --field "$deb"
      printf 'Filename: %s\nSize: %s\nMD5sum: %s\nSHA1: %s\nSHA256: %s\n\n' \
        "$file" "$(stat -c %s "$deb")" "$(md5sum <"$deb" | cut -d' ' -f1)" \
        "$(sha1sum <"$deb" | cut -d' ' -f1)" "$(sha256sum <"$deb" | cut -d' ' -f1)"
    done
  } >"$dist/$comp/Packages"
  gzip -9n <"$dist/$comp/Packages" >"$dist/$comp/Packages.gz"
  {
    printf 'Origin: gpufleet lab stand-in (not Debian)\n'
    printf 'Label: STAND-IN site apt mirror for the pytorch runtime stand-in (gpufleet lab)\n'
    printf 'Suite: %s\nCodename: %s\nArchitectures: %s\nComponents: main\n' "$SUITE" "$SUITE" "$ARCH"
    printf 'Date: %s\n' "$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
    printf 'Description: STAND-IN for a site mirror of the distribution archive: openssh-server and what the runtime stand-in lacks for it, from Debian %s; gpufleet lab only\n' "$SUITE"
    for field in MD5Sum:md5sum SHA1:sha1sum SHA256:sha256sum SHA512:sha512sum; do
      tool=${field#*:}
      printf '%s:\n' "${field%%:*}"
      for f in "$comp/Packages" "$comp/Packages.gz"; do
        printf ' %s %8s %s\n' "$("$tool" <"$dist/$f" | cut -d' ' -f1)" "$(stat -c %s "$dist/$f")" "$f"
      done
    done
  } >"$dist/Release"
  lab_gpg --local-user "$FPR" --digest-algo SHA512 --clearsign --output "$dist/InRelease" "$dist/Release"
  lab_gpg --local-user "$FPR" --digest-algo SHA512 --armor --detach-sign --output "$dist/Release.gpg" "$dist/Release"
  lab_gpg --export "$FPR" >"$BUILD_ROOT/key.gpg"
  gpgv --quiet --keyring "$BUILD_ROOT/key.gpg" "$dist/InRelease" 2>/dev/null ||
    die "InRelease does not verify against $FPR"
  gpgv --quiet --keyring "$BUILD_ROOT/key.gpg" "$dist/Release.gpg" "$dist/Release" 2>/dev/null ||
    die "Release.gpg does not verify against $FPR"
  cat >"$tmp/README.txt" <<EOF
STAND-IN apt repository of the gpufleet lab (lab/standin/build-workbench-image.sh --flavour runtime).

It stands in for the site mirror of the distribution archive that the pytorch_image role's
build (apt-get install openssh-server in the pinned image) needs on an air-gapped node: the
official pytorch/pytorch image's apt points at Ubuntu's archive, which the lab cannot reach.
It is not Debian's archive: it holds only openssh-server and exactly the packages the lab's
runtime stand-in image ($IMAGE_PATH:$TAG) lacks for it, taken from Debian $SUITE,
and is signed with the lab archive key (/lab-archive-key.asc).

  deb [signed-by=$APT_KEYRING] $APT_URL $SUITE main
EOF
  chmod -R a+rX "$tmp"
  APT_STAGE=$WWW_DIR/.$APT_NAME.$HASH
  rm -rf "$APT_STAGE"
  mv -T "$tmp" "$APT_STAGE"
  STAGED=("$APT_STAGE")
}

# The image's apt points only at the lab's repository (signed-by the lab key); pip trusts the
# lab's plain-HTTP web server (the role passes the index URL; without the trust pip ignores
# an http:// index that is not on loopback).
configure_runtime() {
  local r=$1
  rm -f "$r/etc/apt/sources.list" "$r"/etc/apt/sources.list.d/*
  install -d -m 0755 "$r/etc/apt/keyrings"
  install -m 0644 "$BUILD_ROOT/key.gpg" "$r$APT_KEYRING"
  cat >"$r$APT_SOURCES" <<EOF
# gpufleet lab STAND-IN: the lab's apt repository stands in for a site mirror (the official
# pytorch/pytorch image points at Ubuntu's archive, which the lab cannot reach).
Types: deb
URIs: $APT_URL/
Suites: $SUITE
Components: main
Signed-By: $APT_KEYRING
EOF
}

# publish_staged NAME DIR: point WWW_DIR/NAME at DIR (a sibling) atomically, remove older ones.
publish_staged() {
  local name=$1 dir=$2 old
  ln -sfn "${dir##*/}" "$WWW_DIR/.$name.link.$$"
  mv -T "$WWW_DIR/.$name.link.$$" "$WWW_DIR/$name"
  for old in "$WWW_DIR/.$name".*; do
    [[ -e $old || -L $old ]] || continue
    [[ $old == "$dir" ]] || rm -rf "$old"
  done
  STAGED=()
  log "published $WWW_DIR/$name -> ${dir##*/}"
}

published() { [[ -L $WWW_DIR/$1 && $(readlink "$WWW_DIR/$1") == "$2" && -e $WWW_DIR/$2/$3 ]]; }

# --- runtime: the lab's PyPI index ---------------------------------------------------------

# WWW_DIR/pypi: simple/<name>/index.html (PEP 503) and files/, every wheel of the workbench
# lock but torch (the CPU torch wheel is ~200 MB, and a role installs only JupyterLab), with
# the lock's sha256 in the links. Rebuilt when the lock or this script changes; checked with
# pip in the runtime image (and its plain-HTTP trust) before it is published.
publish_pypi_index() {
  local hash stage tmp url out
  hash=$({
    printf 'pypi format 1\n'
    sha256sum <"$SELF"
    sha256sum <"$WORKBENCH_LOCK"
  } | sha256sum | cut -c1-16)
  stage=.$PYPI_NAME.$hash
  if ((!FORCE)) && published "$PYPI_NAME" "$stage" simple/index.html; then
    log "PyPI index up to date ($stage)"
    return 0
  fi
  BUILD_ROOT=$(mktemp -d "$STATE_DIR/build-pypi.XXXXXX")
  fetch_wheels "$WORKBENCH_LOCK" "$STATE_DIR/workbench-wheels" workbench
  tmp=$(mktemp -d "$WWW_DIR/.$PYPI_NAME.tmp.XXXXXX")
  STAGED+=("$tmp")
  chmod 0755 "$tmp"
  out=$(
    "$HOST_PY" - "$WORKBENCH_LOCK" "$WHEEL_CACHE" "$tmp" torch <<'EOF'
import hashlib, html, os, re, shutil, sys, urllib.parse
lock, cache, out, skip = sys.argv[1:5]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins, name = {}, None
for line in open(lock):
    line = line.strip()
    if line and line[0].isalnum() and "==" in line:
        name = norm(line.split()[0].split("==")[0])
        pins[name] = None
    elif line.startswith("--hash=sha256:") and name:
        pins[name] = line.split(":", 1)[1]
by_hash = {}
for fn in os.listdir(cache):
    if fn.endswith(".whl") and norm(fn.split("-")[0]) != skip:
        with open(os.path.join(cache, fn), "rb") as f:
            by_hash[hashlib.file_digest(f, "sha256").hexdigest()] = fn
os.makedirs(os.path.join(out, "files"))
page = '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0"><title>{0}</title></head>\n<body><h1>{0}</h1>\n{1}</body></html>\n'
projects = []
for name, digest in sorted(pins.items()):
    if name == skip:
        continue
    fn = by_hash.get(digest)
    if not fn:
        sys.exit(f"no wheel with the locked sha256 of {name} in {cache}")
    src, dst = os.path.join(cache, fn), os.path.join(out, "files", fn)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    os.makedirs(os.path.join(out, "simple", name))
    link = f'<a href="../../files/{urllib.parse.quote(fn)}#sha256={digest}">{html.escape(fn)}</a><br>\n'
    with open(os.path.join(out, "simple", name, "index.html"), "w") as f:
        f.write(page.format(f"Links for {name}", link))
    projects.append(f'<a href="{name}/">{name}</a><br>\n')
with open(os.path.join(out, "simple", "index.html"), "w") as f:
    f.write(page.format("Simple index", "".join(projects)))
print(len(projects))
EOF
  ) || die "PyPI index: failed"
  log "PyPI index: $out projects of ${WORKBENCH_LOCK#"$HERE"/} (all but torch)"
  cat >"$tmp/README.txt" <<EOF
STAND-IN PyPI index of the gpufleet lab (lab/standin/build-workbench-image.sh --flavour runtime).

It stands in for the site's PyPI mirror that the pytorch_image role's build (pip install
jupyterlab==$JUPYTERLAB_VERSION in the pinned image) needs on an air-gapped node. It is not
PyPI: it holds JupyterLab $JUPYTERLAB_VERSION and its dependencies, one version each, as
pinned (with sha256) in lab/standin/workbench/requirements.txt, but not torch.

  pip install --index-url $PIP_INDEX_URL --trusted-host $PIP_TRUSTED_HOST jupyterlab==$JUPYTERLAB_VERSION
EOF
  chmod -R a+rX "$tmp"
  rm -rf "${WWW_DIR:?}/$stage"
  mv -T "$tmp" "$WWW_DIR/$stage"
  STAGED=("$WWW_DIR/$stage")
  cleanup

  # A real client against the staged index: the runtime image's pip (the plain-HTTP lab host
  # trusted on the command line, as the role's pytorch_image_build_pip_trusted_host does),
  # then the URLs without a trailing slash (the web server redirects).
  url=${WWW_URL%/}/$stage/simple
  out=$("$DOCKER" run --rm "$IMAGE_ID" sh -c "python3 -m pip download --no-deps --disable-pip-version-check \
    -q -d /tmp/dl --index-url $url --trusted-host $PIP_TRUSTED_HOST jupyterlab==$JUPYTERLAB_VERSION && ls /tmp/dl" 2>&1) ||
    die "PyPI index: pip download jupyterlab==$JUPYTERLAB_VERSION in the runtime image failed: $out"
  [[ $out == "jupyterlab-$JUPYTERLAB_VERSION-"*.whl ]] || die "PyPI index: pip downloaded '$out'"
  # Read whole, then matched: `curl | grep -q` fails under pipefail when grep stops reading first.
  page=$(curl -fsSL --max-time 10 "$url") && [[ $page == *'<a href="jupyterlab/">'* ]] ||
    die "PyPI index: $url does not list jupyterlab"
  page=$(curl -fsSL --max-time 10 "$url/jupyterlab") && grep -q "jupyterlab-$JUPYTERLAB_VERSION-.*#sha256=" <<<"$page" ||
    die "PyPI index: $url/jupyterlab does not link the wheel"
  publish_staged "$PYPI_NAME" "$WWW_DIR/$stage"
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
  json=$JSON_PATH
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

# write_json KEY=VALUE... (KEY:=VALUE for a JSON number): the description, in that order;
# rewritten only when it changes.
write_json() {
  local json=$JSON_PATH tmp
  mkdir -p "${json%/*}"
  tmp=$(mktemp "$json.XXXXXX")
  "$HOST_PY" - "$tmp" "$@" <<'EOF'
import json, sys
doc = {}
for arg in sys.argv[2:]:
    key, value = arg.split("=", 1)
    if key.endswith(":"):
        doc[key[:-1]] = json.loads(value)
    else:
        doc[key] = value
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

up_to_date() {
  ((!FORCE)) && [[ $(image_label "$LOCAL_IMAGE" gpufleet.lab.inputs) == "$HASH" ]] || return 1
  # The runtime's apt sources name the repository built with it.
  [[ $FLAVOUR != runtime ]] || published "$APT_NAME" ".$APT_NAME.$HASH" "dists/$SUITE/InRelease"
}
if up_to_date; then
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
  [[ -f $JSON_PATH && $(json_field "$JSON_PATH" image_id) == "$IMAGE_ID" &&
    $(json_field "$JSON_PATH" digest) == "$DIGEST" ]]
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

NOTE="$TITLE: a gpufleet lab stand-in, not the pytorch/pytorch image"
if [[ $FLAVOUR == workbench ]]; then
  ensure_archive "$IMAGE_ID"
  write_json "repository=$REGISTRY/$IMAGE_PATH" "tag=$TAG" "digest=$DIGEST" "image_id=$IMAGE_ID" \
    "archive_url=${WWW_URL%/}/images/$ARCHIVE_NAME.tar" "archive_sha256=$ARCHIVE_SHA256" \
    "archive_size:=$ARCHIVE_SIZE" "archive_ref=$LOCAL_IMAGE" "torch=$TORCH_VERSION" \
    "jupyterlab=$JUPYTERLAB_VERSION" "inputs=$HASH" "note=$NOTE"
else
  publish_pypi_index
  write_json "repository=$REGISTRY/$IMAGE_PATH" "tag=$TAG" "digest=$DIGEST" "image_id=$IMAGE_ID" \
    "torch=$TORCH_VERSION" "numpy=$NUMPY_VERSION" "apt_url=$APT_URL" "apt_suite=$SUITE" \
    "apt_keyring=$APT_KEYRING" "pip_index_url=$PIP_INDEX_URL" \
    "pip_index_jupyterlab=$JUPYTERLAB_VERSION" "inputs=$HASH" "note=$NOTE"
fi

log "registry: $REGISTRY/$IMAGE_PATH:$TAG"
log "digest:   $REGISTRY/$IMAGE_PATH@$DIGEST"
if [[ $FLAVOUR == workbench ]]; then
  log "archive:  ${WWW_URL%/}/images/$ARCHIVE_NAME.tar (image id $IMAGE_ID)"
else
  log "image id: $IMAGE_ID"
  log "apt:      deb [signed-by=$APT_KEYRING] $APT_URL $SUITE main"
  log "pypi:     $PIP_INDEX_URL (jupyterlab $JUPYTERLAB_VERSION)"
fi
log "size:     $("$DOCKER" image inspect -f '{{.Size}}' "$LOCAL_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
