#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run). On a fresh Debian 12
# machine as root it installs what it needs, then runs, in order: yamllint,
# ansible-lint (production profile), ruff, unit tests (and the controller-side ones again on
# ansible-core 2.17, the oldest the collection claims), ansible-test sanity on the repository
# and on the release tarball, and every Molecule scenario.
# Each stage's wall time is printed, and a summary at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STAGES=${TEST_STAGES:-"setup lint unit sanity molecule"}
# nvidia_driver first: it commits its converged node as a driver-installed node image, which
# the default scenario starts from (lab/lab.sh node-image) instead of building DKMS again.
SCENARIOS=${MOLECULE_SCENARIOS:-$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done |
  awk '$0 == "nvidia_driver" {print; next} {rest = rest $0 "\n"} END {printf "%s", rest}')}
declare -a REPORT=()
PASSED=0
FAILED=0

# Each stage's output also goes to a log; a failed stage's failure lines are printed again
# after the summary, so the last lines of a CI log say what failed and why.
LOGS=${TEST_LOGS:-$PWD/.test-logs}
mkdir -p "$LOGS"
FAILED_LOG=""

summary() {
  echo "=== stage times"
  for line in "${REPORT[@]}"; do echo "  $line"; done
  echo "stages: $PASSED passed, $FAILED failed"
  if [[ -n $FAILED_LOG ]]; then
    echo "=== why it failed (from $FAILED_LOG)"
    sed 's/\x1b\[[0-9;]*m//g' "$FAILED_LOG" |
      grep -E -A14 'fatal: |FAILED! =>|^ *E  |AssertionError|ERROR |[Ee]rror:|failed=[1-9]' | tail -n 80 || true
  fi
}
trap summary EXIT

stage() {
  local name=$1 start=$SECONDS rc=0
  shift
  local log="$LOGS/${name//[^A-Za-z0-9_.-]/_}.log"
  echo "=== stage: $name"
  { "$@" 2>&1 | tee "$log"; } || rc=$?   # pipefail: the stage's status (tee's is 0)
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    PASSED=$((PASSED + 1)); REPORT+=("$(printf '%-28s %5ss  ok' "$name" "$took")")
  else
    FAILED=$((FAILED + 1)); REPORT+=("$(printf '%-28s %5ss  FAILED (rc=%s)' "$name" "$took" "$rc")")
    FAILED_LOG=$log
    exit "$rc"
  fi
}

wants() { [[ " $STAGES " == *" $1 "* ]]; }

# Lint and unit stages need only the virtualenv; Molecule needs dockerd, the node image and the registry.
if wants setup || wants molecule; then
  stage "setup: lab prerequisites" bash lab/lab.sh prereqs
  stage "setup: lab images" bash lab/lab.sh image
  stage "setup: lab registry" bash lab/lab.sh registry
  stage "setup: stand-in PyTorch image" bash lab/lab.sh standin-image
elif [[ ! -x .venv/bin/ansible-lint ]]; then
  stage "setup: virtualenv" bash lab/lab.sh prereqs
fi

export PATH="$PWD/.venv/bin:$PATH"
if wants molecule; then
  eval "$(bash lab/lab.sh env)"
  export GPUFLEET_LAB_REGISTRY GPUFLEET_LAB_WWW GPUFLEET_LAB_WORKBENCH_DIGEST GPUFLEET_LAB_WORKBENCH_ID \
    GPUFLEET_LAB_RUNTIME_DIGEST GPUFLEET_LAB_RUNTIME_ID
fi

if wants lint; then
  stage "yamllint" yamllint --strict .
  stage "ansible-lint (production)" ansible-lint
  stage "ruff" ruff check .
fi
if wants unit; then
  stage "unit tests (pytest)" pytest tests/unit
  stage "controller tests on ansible-core 2.17" bash tests/oldest/run.sh
fi
if wants sanity; then
  stage "ansible-test sanity (repo, tarball)" bash tests/sanity/run.sh
fi
if wants molecule; then
  for scenario in $SCENARIOS; do
    GPUFLEET_LAB_NODE_IMAGE_BOOKWORM=$(bash lab/lab.sh node-image bookworm)
    export GPUFLEET_LAB_NODE_IMAGE_BOOKWORM
    stage "molecule: $scenario" molecule test -s "$scenario"
  done
fi
