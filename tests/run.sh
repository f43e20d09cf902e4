#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run). On a fresh Debian 12
# machine as root it installs what it needs, then runs, in order: yamllint,
# ansible-lint (production profile), ruff, unit tests (and the controller-side ones again on
# ansible-core 2.17, the oldest the collection claims), ansible-test sanity on the repository
# and on the release tarball, galaxy-importer on the tarball, and every Molecule scenario (in
# lanes side by side: MOLECULE_LANES).
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
  stage "unit tests (pytest)" pytest -n auto --dist loadfile tests/unit
  stage "controller tests on ansible-core 2.17" bash tests/oldest/run.sh
fi
if wants sanity; then
  stage "ansible-test sanity (repo, tarball)" bash tests/sanity/run.sh
  stage "galaxy-importer (tarball)" bash tests/galaxy-importer.sh
fi
# One scenario, its output in its own log (a lane runs beside others: their output would
# interleave). Prints one line when it ends; its stage-time line goes to the lane's report.
scenario_run() {
  local scenario=$1 report=$2 start=$SECONDS rc=0 log="$LOGS/molecule_${1}.log"
  GPUFLEET_LAB_NODE_IMAGE_BOOKWORM=$(bash lab/lab.sh node-image bookworm)
  export GPUFLEET_LAB_NODE_IMAGE_BOOKWORM
  echo "=== stage: molecule: $scenario (log $log)"
  # each line stamped with the seconds since the scenario started, so the log shows where the time went
  molecule test -s "$scenario" 2>&1 | while IFS= read -r line; do
    printf '%5d %s\n' "$((SECONDS - start))" "$line"
  done >"$log" || rc=$?
  local took=$((SECONDS - start))
  # the time of each Molecule step: from its "Executing" line to the next one (or the end)
  sed 's/\x1b\[[0-9;]*m//g' "$log" | awk -v end="$took" -v name="$scenario" '
    match($0, /[a-z_]+: Executing *$/) {
      step = substr($0, RSTART, index(substr($0, RSTART), ":") - 1)
      if (prev != "") out = out sprintf(" %s %ds,", prev, $1 - at)
      prev = step; at = $1
    }
    END { if (prev != "") out = out sprintf(" %s %ds", prev, end - at); print "=== molecule: " name " steps:" out }'

  if ((rc == 0)); then
    printf '%-28s %5ss  ok\n' "molecule: $scenario" "$took" >>"$report"
  else
    printf '%-28s %5ss  FAILED (rc=%s)\n' "molecule: $scenario" "$took" "$rc" >>"$report"
    echo "$log" >>"$LOGS/.molecule-failed"
  fi
  echo "=== molecule: $scenario: $( ((rc == 0)) && echo ok || echo "FAILED (rc=$rc)") in ${took}s"
  return "$rc"
}

# The scenarios in MOLECULE_LANES lanes (default 2) run side by side: a lane runs its scenarios
# one after another, and none starts a new one once a scenario has failed in any lane. The
# scenarios share nothing but the lab's registry, web server and images (each has its own nodes
# and Molecule state). nvidia_driver and default stay in the first lane, in that order (the
# committed node image); the rest go to the lane with the least work so far, by the weights
# below (their relative length when two lanes share the 2-core machine, 2026-12-02).
declare -A WEIGHT=([nvidia_driver]=6 [default]=17 [workbench]=10 [gpu_handover]=9
  [docker]=2 [nvidia_container_toolkit]=3 [node_drain]=1)
molecule_lanes() {
  local lanes=${MOLECULE_LANES:-2} i best scenario
  local -a lane load pids
  for ((i = 0; i < lanes; i++)); do lane[i]=""; load[i]=0; done
  # nvidia_driver and default as SCENARIOS orders them, then the rest longest first, so the
  # short ones even the lanes out at the end
  local pinned rest
  pinned=$(for scenario in $SCENARIOS; do
    case $scenario in nvidia_driver | default) echo "$scenario" ;; esac
  done)
  rest=$(for scenario in $SCENARIOS; do
    case $scenario in nvidia_driver | default) ;; *) echo "${WEIGHT[$scenario]:-3} $scenario" ;; esac
  done | sort -s -k1,1nr | cut -d' ' -f2)
  for scenario in $pinned $rest; do
    best=0
    if [[ $scenario != nvidia_driver && $scenario != default ]]; then
      for ((i = 1; i < lanes; i++)); do
        if ((load[i] < load[best])); then best=$i; fi
      done
    fi
    lane[best]+="$scenario "
    load[best]=$((load[best] + ${WEIGHT[$scenario]:-3}))
  done
  rm -f "$LOGS/.molecule-failed" "$LOGS"/.lane-*.report
  for ((i = 0; i < lanes; i++)); do
    [[ -n ${lane[i]} ]] || continue
    echo "=== molecule lane $((i + 1)): ${lane[i]}"
    (
      for scenario in ${lane[i]}; do
        if [[ -e $LOGS/.molecule-failed ]]; then break; fi
        scenario_run "$scenario" "$LOGS/.lane-$i.report" || break
      done
    ) &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  for ((i = 0; i < lanes; i++)); do
    [[ -f $LOGS/.lane-$i.report ]] || continue
    while IFS= read -r line; do
      REPORT+=("$line")
      if [[ $line == *" ok" ]]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
    done <"$LOGS/.lane-$i.report"
  done
  if [[ -e $LOGS/.molecule-failed ]]; then
    FAILED_LOG=$(head -n1 "$LOGS/.molecule-failed")
    echo "=== the end of $FAILED_LOG"
    sed 's/\x1b\[[0-9;]*m//g' "$FAILED_LOG" | tail -n 150
    exit 1
  fi
}

if wants molecule; then
  molecule_lanes
fi
