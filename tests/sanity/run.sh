#!/usr/bin/env bash
# ansible-test sanity on the repository tree and on the release tarball. ansible-test wants the
# collection at .../ansible_collections/gpufleet/node, so both run on copies in a scratch folder:
#   repo     every file git knows (tracked, or untracked and not ignored), as in a fresh clone;
#   tarball  `ansible-galaxy collection build` extracted, as Galaxy or Automation Hub sees it.
# Both read tests/sanity/ignore-<ansible-core>.txt, which therefore names shipped files only.
# Needs the project's .venv (lab/lab.sh prereqs) and PyPI: each sanity test installs its own
# pinned requirements into a virtualenv of its own (cached under ~/.ansible/test).
# Usage: tests/sanity/run.sh [ansible-test sanity options, e.g. --test pylint]
# SANITY_KEEP=1 keeps the scratch folder (kept anyway when a run fails: results in tests/output).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
VENV=$REPO/.venv/bin
[[ -x $VENV/ansible-test ]] || { echo "sanity: $VENV/ansible-test missing; run: bash lab/lab.sh prereqs" >&2; exit 2; }
command -v git >/dev/null && git -C "$REPO" rev-parse --show-toplevel >/dev/null 2>&1 ||
  { echo "sanity: needs a git checkout (the repo copy is the files git knows)" >&2; exit 2; }
export PATH="$VENV:$PATH"
PYTHON_VERSION=${SANITY_PYTHON:-$("$VENV/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpufleet-sanity.XXXXXX")
STATUS=0
declare -a REPORT=()
finish() {
  echo "=== sanity times"
  for line in "${REPORT[@]}"; do echo "  $line"; done
  if [[ $STATUS -ne 0 || ${SANITY_KEEP:-0} == 1 ]]; then
    echo "sanity: copies and results kept in $WORK (tests/output/ of each copy)"
  else
    rm -rf "$WORK"
  fi
}
trap finish EXIT

step() {   # step NAME COMMAND...: runs it, records its time, remembers a failure
  local name=$1 start=$SECONDS rc=0
  shift
  echo "=== $name"
  "$@" || rc=$?
  if ((rc == 0)); then
    REPORT+=("$(printf '%-34s %5ss  ok' "$name" "$((SECONDS - start))")")
  else
    REPORT+=("$(printf '%-34s %5ss  FAILED (rc=%s)' "$name" "$((SECONDS - start))" "$rc")")
    STATUS=1
  fi
  return "$rc"
}

copy_repo() {
  # The link collections/ansible_collections/gpufleet/node -> ../../.. lets a plain checkout
  # resolve gpufleet.node (ansible.cfg, tests/unit/conftest.py); the copy already sits under
  # ansible_collections/gpufleet/node, and the link is not shipped (galaxy.yml build_ignore).
  local dest=$WORK/repo/ansible_collections/gpufleet/node
  mkdir -p "$dest" || return
  git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' path; do
      [[ $path == collections/ansible_collections/gpufleet/node ]] && continue
      [[ -e $path || -L $path ]] && printf '%s\0' "$path"   # skip files deleted, not yet committed
    done |
    tar --null --no-recursion -T - -cf - | tar -xf - -C "$dest"
}

build_tarball() {
  local dest=$WORK/tarball/ansible_collections/gpufleet/node
  mkdir -p "$WORK/dist" "$dest" || return
  ansible-galaxy collection build --output-path "$WORK/dist" "$REPO" || return
  tar -xzf "$WORK"/dist/gpufleet-node-*.tar.gz -C "$dest"
}

sanity() {   # sanity DIR [options]
  local dir=$1
  shift
  (cd "$dir" && ansible-test sanity --local --python "$PYTHON_VERSION" --color no "$@")
}

step "pip bootstrap (offline get-pip)" bash tests/sanity/pip-bootstrap.sh "$VENV/python"
step "copy repository tree" copy_repo
step "build and extract tarball" build_tarball
step "sanity: repository tree" sanity "$WORK/repo/ansible_collections/gpufleet/node" "$@" || true
step "sanity: release tarball" sanity "$WORK/tarball/ansible_collections/gpufleet/node" "$@" || true
exit "$STATUS"
