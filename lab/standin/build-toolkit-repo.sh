#!/usr/bin/env bash
# Builds the lab's STAND-IN for NVIDIA's libnvidia-container stable apt repository, which
# cannot be reached from the lab. It is NOT NVIDIA's repository and holds no NVIDIA software:
# the four packages carry the real names, versions and exact-version dependencies, with
# stand-in scripts inside (see lab/README.md and files/README.txt).
#
# Layout, flat per architecture like NVIDIA's (`deb [signed-by=...] URL/stable/deb/amd64 /`):
#   WWW/nvidia-container-toolkit-standin/README.txt, gpgkey
#   WWW/nvidia-container-toolkit-standin/stable/deb/amd64/
#     Packages Packages.gz Release Release.gpg InRelease README.txt *.deb
# signed with the lab archive key. The published name is a symlink to a directory named by
# the sha256 of the inputs (this script, files/, the key's fingerprint); a re-run with the
# same inputs does nothing, a changed input builds a new tree and swaps the link atomically,
# so a client never sees a half-written repository.
#
# usage: build-toolkit-repo.sh [--www DIR] [--gnupghome DIR] [--key USER-ID] [--force]
# Defaults are the lab's: /var/lib/gpufleet-lab/www, /var/lib/gpufleet-lab/gnupg,
# lab-archive@gpufleet.invalid. Needs only dpkg-deb, gpg, gpgv, gzip and coreutils.
set -euo pipefail
umask 022

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename -- "${BASH_SOURCE[0]}")
FILES=$HERE/files

WWW_DIR=/var/lib/gpufleet-lab/www
GNUPG_DIR=/var/lib/gpufleet-lab/gnupg
KEY=lab-archive@gpufleet.invalid
RUN_DIR=${GPUFLEET_LAB_RUN_DIR:-/run/gpufleet-lab}
FORCE=0

NAME=nvidia-container-toolkit-standin
ARCH=amd64
VERSIONS=(1.18.0-1 1.17.8-1) # newest first; every package exists in every version
MAINTAINER='gpufleet lab <lab@gpufleet.invalid>'
# Fixed file times and ar/tar timestamps: the same inputs give byte-identical .debs.
EPOCH=1735689600 # 2025-01-01T00:00:00Z

log() { printf 'lab: standin: %s\n' "$*"; }
die() {
  printf 'lab: standin: error: %s\n' "$*" >&2
  exit 1
}

while (($#)); do
  case $1 in
  --www) WWW_DIR=${2:?--www needs a directory} && shift 2 ;;
  --gnupghome) GNUPG_DIR=${2:?--gnupghome needs a directory} && shift 2 ;;
  --key) KEY=${2:?--key needs a user id} && shift 2 ;;
  --force) FORCE=1 && shift ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF"
    exit 0
    ;;
  *) die "unknown argument: $1 (see --help)" ;;
  esac
done

for tool in dpkg-deb gpg gpgv gpgconf gzip sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -d $WWW_DIR ]] || die "$WWW_DIR missing; run: lab/lab.sh registry"

mkdir -p "$RUN_DIR"
exec 8>"$RUN_DIR/standin.lock"
flock -w 300 8 || die "another build holds $RUN_DIR/standin.lock"

# The public key ring only: --list-secret-keys would start a gpg-agent on the lab's GNUPGHOME.
# Signing (from a private copy, below) fails if the secret key is missing.
FPR=$(gpg --homedir "$GNUPG_DIR" --batch --with-colons --list-keys "$KEY" 2>/dev/null |
  awk -F: '$1 == "fpr" {print $10; exit}') || true
[[ -n $FPR ]] || die "no key '$KEY' in $GNUPG_DIR; run: lab/lab.sh registry"

inputs_hash() {
  {
    printf 'format 1\nkey %s\n' "$FPR"
    # its own script and package files only: the workbench image's files are not its inputs
    (cd "$HERE" && find ./build-toolkit-repo.sh ./files -type f ! -name '*~' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

HASH=$(inputs_hash)
LINK=$WWW_DIR/$NAME
FINAL_NAME=.$NAME.$HASH
FINAL=$WWW_DIR/$FINAL_NAME

if ((!FORCE)) && [[ -L $LINK && $(readlink "$LINK") == "$FINAL_NAME" &&
  -s $FINAL/stable/deb/$ARCH/InRelease ]]; then
  log "repository up to date ($FINAL_NAME)"
  exit 0
fi

START=$(date +%s.%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpufleet-standin.XXXXXX")
OUT=
cleanup() {
  if [[ -d $WORK/gnupg ]]; then
    gpgconf --homedir "$WORK/gnupg" --kill gpg-agent 2>/dev/null || true
  fi
  rm -rf "$WORK"
  if [[ -n $OUT && -d $OUT ]]; then rm -rf "$OUT"; fi
}
trap cleanup EXIT

OUT=$(mktemp -d "$WWW_DIR/.$NAME.tmp.XXXXXX")
chmod 0755 "$OUT"
REPO=$OUT/stable/deb/$ARCH
mkdir -p "$REPO"

# --- packages ----------------------------------------------------------------------------

# new_root PACKAGE VERSION: an empty package tree with the stand-in note under /usr/share/doc.
new_root() {
  local pkg=$1 version=$2 root
  root=$WORK/root/${pkg}_$version
  mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$pkg"
  cat >"$root/usr/share/doc/$pkg/README.stand-in" <<EOF
$pkg $version: STAND-IN built by the gpufleet lab (lab/standin/build-toolkit-repo.sh).
This is NOT NVIDIA software. It stands in for NVIDIA's package of the same name so
that roles can be tested offline; it contains stand-in scripts only, which hand
the lab's STAND-IN GPU (lab/standin/gpu/) to containers, never a real one.
EOF
  printf '%s\n' "$root"
}

# install_script SOURCE ROOT DEST VERSION: copy a files/ script, filling in the version.
install_script() {
  local src=$FILES/$1 root=$2 dest=$3 version=$4
  mkdir -p "$root/$(dirname "$dest")"
  # A Python script's `#!/usr/bin/env python` becomes /usr/bin/python3, as dh_python3 does in a
  # real package build: Debian nodes have python3 and no `python`.
  sed -e "s/@UPSTREAM_VERSION@/${version%-*}/g" -e "s/@VERSION@/$version/g" \
    -e '1s|^#!/usr/bin/env python$|#!/usr/bin/python3|' "$src" >"$root/$dest"
  chmod 0755 "$root/$dest"
}

# build_deb ROOT PACKAGE VERSION DEPENDS SUMMARY DETAIL (SUMMARY: the real package it stands in for)
build_deb() {
  local root=$1 pkg=$2 version=$3 depends=$4 summary=$5 detail=$6 size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  {
    printf 'Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: %s\n' \
      "$pkg" "$version" "$ARCH" "$MAINTAINER"
    printf 'Installed-Size: %s\n' "$size"
    [[ -z $depends ]] || printf 'Depends: %s\n' "$depends"
    printf 'Section: utils\nPriority: optional\n'
    printf "Description: STAND-IN for NVIDIA's %s (gpufleet lab, not NVIDIA software)\n" "$summary"
    printf ' %s\n' \
      "This package is NOT NVIDIA software. The gpufleet lab builds it to stand in" \
      "for NVIDIA's package of the same name and version, from a local repository" \
      "laid out like NVIDIA's libnvidia-container stable repository, so that roles" \
      "can be tested offline without a GPU." \
      "." \
      "$detail"
  } >"$root/DEBIAN/control"
  find "$root" -exec touch -h -d "@$EPOCH" {} +
  SOURCE_DATE_EPOCH=$EPOCH dpkg-deb --root-owner-group -Zxz --build "$root" \
    "$REPO/${pkg}_${version}_$ARCH.deb" >/dev/null
}

for version in "${VERSIONS[@]}"; do
  root=$(new_root libnvidia-container1 "$version")
  build_deb "$root" libnvidia-container1 "$version" "" \
    "libnvidia-container1" \
    "Contents: a placeholder file under /usr/share/doc; no library."

  root=$(new_root libnvidia-container-tools "$version")
  install_script nvidia-container-cli.in "$root" usr/bin/nvidia-container-cli "$version"
  build_deb "$root" libnvidia-container-tools "$version" \
    "libnvidia-container1 (= $version)" \
    "libnvidia-container-tools" \
    "Contents: /usr/bin/nvidia-container-cli, a script that answers --version and fails otherwise."

  root=$(new_root nvidia-container-toolkit-base "$version")
  install_script nvidia-container-runtime "$root" usr/bin/nvidia-container-runtime "$version"
  install_script nvidia-ctk.in "$root" usr/bin/nvidia-ctk "$version"
  build_deb "$root" nvidia-container-toolkit-base "$version" "python3" \
    "nvidia-container-toolkit-base" \
    "Contents: /usr/bin/nvidia-container-runtime (a runc shim that adds the lab's STAND-IN GPU devices to the container) and /usr/bin/nvidia-ctk (--version, cdi generate, system create-dev-char-symlinks)."

  root=$(new_root nvidia-container-toolkit "$version")
  install_script nvidia-container-runtime-hook.in "$root" usr/bin/nvidia-container-runtime-hook "$version"
  build_deb "$root" nvidia-container-toolkit "$version" \
    "nvidia-container-toolkit-base (= $version), libnvidia-container-tools (= $version)" \
    "nvidia-container-toolkit" \
    "Contents: /usr/bin/nvidia-container-runtime-hook, a script that exits 0 (the stand-in runtime adds the devices)."
done

# --- indexes -----------------------------------------------------------------------------

{
  for deb in "$REPO"/*.deb; do
    dpkg-deb --field "$deb"
    printf 'Filename: ./%s\nSize: %s\nMD5sum: %s\nSHA1: %s\nSHA256: %s\n\n' \
      "$(basename "$deb")" "$(stat -c %s "$deb")" \
      "$(md5sum <"$deb" | cut -d' ' -f1)" "$(sha1sum <"$deb" | cut -d' ' -f1)" \
      "$(sha256sum <"$deb" | cut -d' ' -f1)"
  done
} >"$REPO/Packages"
gzip -9n <"$REPO/Packages" >"$REPO/Packages.gz"

checksums() {
  local field=$1 tool=$2 f
  printf '%s:\n' "$field"
  for f in Packages Packages.gz; do
    printf ' %s %8s %s\n' "$("$tool" <"$REPO/$f" | cut -d' ' -f1)" "$(stat -c %s "$REPO/$f")" "$f"
  done
}

{
  printf 'Origin: gpufleet lab stand-in (not NVIDIA)\n'
  printf 'Label: STAND-IN libnvidia-container stable (gpufleet lab)\n'
  printf 'Architectures: %s\n' "$ARCH"
  printf 'Date: %s\n' "$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
  printf "Description: STAND-IN for NVIDIA's libnvidia-container stable repository; gpufleet lab only, not NVIDIA software\n"
  checksums MD5Sum md5sum
  checksums SHA1 sha1sum
  checksums SHA256 sha256sum
  checksums SHA512 sha512sum
} >"$REPO/Release"

# --- signatures --------------------------------------------------------------------------

# Sign from a private copy of the key ring, with its own agent, so that nothing else using
# the lab's GNUPGHOME (and its agent) is disturbed; cleanup() stops this agent.
mkdir -m 0700 "$WORK/gnupg"
cp -a "$GNUPG_DIR/pubring.kbx" "$GNUPG_DIR/private-keys-v1.d" "$WORK/gnupg/"
[[ ! -f $GNUPG_DIR/trustdb.gpg ]] || cp -a "$GNUPG_DIR/trustdb.gpg" "$WORK/gnupg/"
sign() {
  gpg --homedir "$WORK/gnupg" --batch --quiet --yes --pinentry-mode loopback --passphrase '' \
    --local-user "$FPR" --digest-algo SHA512 "$@"
}
sign --clearsign --output "$REPO/InRelease" "$REPO/Release"
sign --armor --detach-sign --output "$REPO/Release.gpg" "$REPO/Release"
gpg --homedir "$WORK/gnupg" --batch --export "$FPR" >"$WORK/key.gpg"
gpg --homedir "$WORK/gnupg" --batch --armor --export "$FPR" >"$OUT/gpgkey"
gpgv --quiet --keyring "$WORK/key.gpg" "$REPO/InRelease" 2>/dev/null ||
  die "InRelease does not verify against $FPR"
gpgv --quiet --keyring "$WORK/key.gpg" "$REPO/Release.gpg" "$REPO/Release" 2>/dev/null ||
  die "Release.gpg does not verify against $FPR"

cp "$FILES/README.txt" "$OUT/README.txt"
cp "$FILES/README.txt" "$REPO/README.txt"
chmod -R a+rX "$OUT"

# --- publish -----------------------------------------------------------------------------

rm -rf "$FINAL"
mv -T "$OUT" "$FINAL"
OUT=
if [[ -e $LINK && ! -L $LINK ]]; then
  rm -rf "$LINK" # a plain directory from an older layout
fi
ln -sfn "$FINAL_NAME" "$WWW_DIR/.$NAME.link.$$"
mv -T "$WWW_DIR/.$NAME.link.$$" "$LINK"
for old in "$WWW_DIR/.$NAME".*; do
  [[ -e $old || -L $old ]] || continue
  [[ $old == "$FINAL" ]] || rm -rf "$old"
done

log "built ${#VERSIONS[@]} versions x 4 packages in $(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
log "published $LINK -> $FINAL_NAME (signed by $FPR)"
