#!/usr/bin/env bash
# galaxy-importer (what Galaxy and Automation Hub run on an upload) on the release tarball, with
# Automation Hub's settings: version 1.0.0 or later, the required tags, ansible-doc and
# ansible-lint on. ansible-test is not run by it here (it pulls a container image); tests/sanity/
# runs it. The import must log no ERROR and no WARNING other than the notices that the sanity
# ignore files exist (each of their entries carries its reason: tests/sanity/ignore-*.txt).
# Needs the project's .venv (lab/lab.sh prereqs); offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=$PWD/.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpufleet-importer.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$VENV/ansible-galaxy" collection build --output-path "$WORK" . >/dev/null
tarball=$(echo "$WORK"/gpufleet-node-*.tar.gz)
echo "galaxy-importer: $(basename "$tarball")"
# ansible-lint inside the importer resolves community.docker and the others from the `ansible`
# package in .venv, as a controller with the collection's dependencies installed would.
rc=0
(cd "$WORK" && env PATH="$VENV:$PATH" \
  GALAXY_IMPORTER_REQUIRE_V1_OR_GREATER=true GALAXY_IMPORTER_CHECK_REQUIRED_TAGS=true \
  GALAXY_IMPORTER_RUN_ANSIBLE_DOC=true GALAXY_IMPORTER_RUN_ANSIBLE_LINT=true \
  GALAXY_IMPORTER_RUN_ANSIBLE_TEST=false GALAXY_IMPORTER_TMP_ROOT_DIR="$WORK" \
  "$VENV/python" -m galaxy_importer.main "$tarball") >"$WORK/import.log" 2>&1 || rc=$?
problems=$(grep -E '^(ERROR|WARNING|CRITICAL)' "$WORK/import.log" |
  grep -Ev '^WARNING: Ignore files skip ansible-test sanity tests, found ignore-2\.(17|18|19)\.txt with [0-9]+ statement\(s\)$' ||
  true)
grep -E '^(ERROR|WARNING|CRITICAL)' "$WORK/import.log" || true
if ((rc != 0)) || [[ -n $problems ]]; then
  echo "galaxy-importer: the import is not clean (rc=$rc); its log:" >&2
  cat "$WORK/import.log" >&2
  exit 1
fi
echo "galaxy-importer: clean ($(grep -c '^Loading ' "$WORK/import.log") plugins and roles loaded)"
