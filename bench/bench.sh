#!/usr/bin/env bash
# Performance bench of gpufleet.node on the lab (`make bench`; see bench/README.md).
# Measures, side by side in one run, and prints a table (also bench/results/<run>.md):
#   docker  fresh `site.yml --tags docker` on a fresh node vs bench/floor/docker.sh on another
#   site    fresh site.yml on a fresh node vs bench/floor/site.sh on another
#   noop    no-op reruns (changed=0) of the Docker stage and of site.yml
#   scale   no-op site.yml on BENCH_NODES nodes (default "1 4 8")
#   pipelining  the no-op reruns again with ANSIBLE_PIPELINING=True (a tuning the collection controls)
# A bench is not a test: figures are compared with goals and marked ok/over, never failed on.
# It exits non-zero only when it cannot measure (no lab, a node that does not boot, a failed run).
#
#   BENCH=docker,noop            parts to run (default: docker,site,noop,scale,pipelining)
#   BENCH_NODES="1 4"            node counts for `scale`
#   BENCH_KEEP=1                 keep the bench's nodes (gpufleet-bench-*) for inspection or reuse
#   BENCH_REPEAT=3               repeat each no-op run, report the fastest (default 1)
#   BENCH_SCALE_FROM=clone       start scale nodes 2..N as clones of the converged node1 (docker
#                                commit), then converge them; default `fresh` (each builds DKMS)
#   BENCH_REUSE=1                adopt converged nodes a BENCH_KEEP=1 run left (no fresh figure for them;
#                                BENCH_SITE_FRESH_S=<s> gives 2b the earlier run's fresh converge time)
#   bash bench/bench.sh render RUN_ID   write bench/results/RUN_ID.md again from its state.sh
set -euo pipefail

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$BENCH_DIR/.." && pwd)
cd "$REPO_ROOT"

PARTS=",${BENCH:-docker,site,noop,scale,pipelining},"
NODE_COUNTS=${BENCH_NODES:-"1 4 8"}
KEEP=${BENCH_KEEP:-0}
REPEAT=${BENCH_REPEAT:-1}
SCALE_FROM=${BENCH_SCALE_FROM:-fresh}
REUSE=${BENCH_REUSE:-0}
DOCKER=${LAB_DOCKER:-/usr/bin/docker}
VENV=$REPO_ROOT/.venv/bin
NODE_IMAGE=gpufleet-lab/node:bookworm
PREFIX=gpufleet-bench-
LABEL=gpufleet.lab=bench
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR=$BENCH_DIR/results
REPORT=$RESULTS_DIR/$RUN_ID.md
LOGS=$RESULTS_DIR/$RUN_ID
WORK=
CREATED=()
REUSED=()
CLONE_IMAGE=
# Written into a node after site.yml converged it, so BENCH_REUSE=1 knows it may adopt the node.
MARKER=/root/.gpufleet-bench-converged
FAILURES=()

export ANSIBLE_CONFIG=$REPO_ROOT/ansible.cfg
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks
export PROFILE_TASKS_TASK_OUTPUT_LIMIT=all
export PROFILE_TASKS_SORT_ORDER=descending
export ANSIBLE_NOCOLOR=1
# Same values Molecule gets: ansible.cfg's collections path (this checkout first).
export ANSIBLE_COLLECTIONS_PATH=$REPO_ROOT/collections:$HOME/.ansible/collections:/usr/share/ansible/collections

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
  printf 'bench: cannot run: %s\n' "$*" >&2
  exit 1
}
want() { [[ $PARTS == *",$1,"* ]]; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
mol_count() { "$DOCKER" ps --format '{{.Names}}' | grep -c '^gpufleet-mol-' || true; }

# --- figures -----------------------------------------------------------------------------
declare -A FIG=()   # key -> seconds (or text)
declare -A NOTE=()  # key -> note shown in the tables
RUNS=()             # labels of Ansible runs, in order (for the per-task tables)
FLOORS=()           # labels of floor runs
DIFFS=()            # labels of end-state comparisons

# --- nodes -------------------------------------------------------------------------------
mapfile -t NODE_FLAGS < <(bash "$REPO_ROOT/lab/lab.sh" node-flags | grep -v '^--label=')

# create_node NAME HOSTNAME: a lab node like lab.sh/molecule make, labelled as the bench's own.
create_node() { create_node_from "$1" "$2" "$NODE_IMAGE"; }

create_node_from() {
  local name=$PREFIX$1 host=$2 image=$3 label
  if label=$("$DOCKER" inspect -f '{{index .Config.Labels "gpufleet.lab"}}' "$name" 2>/dev/null); then
    [[ $label == bench ]] || die "container $name exists and is not the bench's (label gpufleet.lab=$label)"
    "$DOCKER" rm -f -v "$name" >/dev/null
  fi
  "$DOCKER" run -d --name "$name" --hostname "$host" "${NODE_FLAGS[@]}" \
    --label "$LABEL" --label "gpufleet.bench.run=$RUN_ID" "$image" /lib/systemd/systemd >/dev/null
  CREATED+=("$name")
}

# boot_and_prepare NAME: wait for systemd, then make the node look like a freshly installed
# Debian 12 server (what molecule/shared/server.yml does before Molecule's default scenario).
boot_and_prepare() {
  wait_boot "$1" || return 1
  "$DOCKER" exec -e DEBIAN_FRONTEND=noninteractive "$PREFIX$1" bash -c \
    'apt-get update -q && apt-get install -y -q --no-install-recommends initramfs-tools kmod unattended-upgrades' \
    >"$LOGS/prepare-$1.log" 2>&1 || {
    echo "$PREFIX$1: preparation failed (see $LOGS/prepare-$1.log)"
    return 1
  }
}

wait_boot() {
  local name=$PREFIX$1 state deadline=$((SECONDS + 120))
  while :; do
    state=$("$DOCKER" exec "$name" systemctl is-system-running 2>/dev/null) || true
    [[ $state == running || $state == degraded ]] && break
    ((SECONDS < deadline)) || {
      echo "$name: systemd not up (state: ${state:-none})"
      return 1
    }
    sleep 0.5
  done
}

# converged SHORT: the node is a running bench node that site.yml converged (marker present).
converged() {
  [[ $("$DOCKER" inspect -f '{{.State.Running}} {{index .Config.Labels "gpufleet.lab"}}' "$PREFIX$1" 2>/dev/null) == "true bench" ]] &&
    "$DOCKER" exec "$PREFIX$1" test -f "$MARKER"
}

# reuse SHORT: with BENCH_REUSE=1, adopt a converged node an earlier BENCH_KEEP=1 run left.
reuse() {
  [[ $REUSE == 1 ]] && converged "$1" || return 1
  REUSED+=("$1")
  CREATED+=("$PREFIX$1")
  log "reusing $PREFIX$1 (converged by an earlier run)"
}
reused() { [[ " ${REUSED[*]} " == *" $1 "* ]]; }

# nodes SHORT:HOSTNAME...: create, boot and prepare them in parallel (before any measurement).
nodes() {
  local spec pids=() rc=0 pid
  for spec in "$@"; do create_node "${spec%%:*}" "${spec#*:}"; done
  for spec in "$@"; do
    boot_and_prepare "${spec%%:*}" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  ((rc == 0)) || die "a node did not boot or could not be prepared"
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  if ((${#CREATED[@]})); then
    if [[ $KEEP == 1 ]]; then
      log "kept ${CREATED[*]} (BENCH_KEEP=1); remove with: docker rm -f -v ${CREATED[*]}"
    else
      "$DOCKER" rm -f -v "${CREATED[@]}" >/dev/null 2>&1 || true
      log "removed ${#CREATED[@]} bench node(s)"
    fi
  fi
  if [[ -n $CLONE_IMAGE && $KEEP != 1 ]]; then "$DOCKER" rmi "$CLONE_IMAGE" >/dev/null 2>&1 || true; fi
  [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
  exit "$rc"
}

# --- inventories -------------------------------------------------------------------------
# inventory DIR HOST=CONTAINER...: the lab inventory for these nodes (community.docker.docker),
# with the lab's group_vars linked the way Molecule links them.
inventory() {
  local dir=$1 pair
  shift
  mkdir -p "$dir"
  ln -sfn "$REPO_ROOT/inventories/lab/group_vars" "$dir/group_vars"
  {
    echo "---"
    echo "all:"
    echo "  children:"
    echo "    gpu_nodes:"
    echo "      hosts:"
    for pair in "$@"; do
      echo "        ${pair%%=*}:"
      echo "          ansible_connection: community.docker.docker"
      echo "          ansible_host: ${pair#*=}"
    done
    echo "      vars:"
    echo "        gpufleet_lab_registry: \"$GPUFLEET_LAB_REGISTRY\""
    echo "        gpufleet_lab_www: \"$GPUFLEET_LAB_WWW\""
    echo "        gpufleet_lab_workbench_digest: \"$GPUFLEET_LAB_WORKBENCH_DIGEST\""
    echo "        gpufleet_lab_workbench_id: \"$GPUFLEET_LAB_WORKBENCH_ID\""
    echo "        gpu_verify_report_dir: \"$WORK/fleet-report\""
  } >"$dir/hosts.yml"
}

# --- runs --------------------------------------------------------------------------------
# play LABEL INVENTORY_DIR [ansible-playbook args...]: time site.yml; sets RUN_S, RUN_CHANGED.
play() {
  local label=$1 inv=$2 t0 t1 rc=0
  shift 2
  log "$label: ansible-playbook site.yml $* (load $(loadavg))"
  NOTE[$label.load]=$(loadavg)
  t0=$(now)
  "$VENV/ansible-playbook" -i "$inv" site.yml "$@" >"$LOGS/$label.log" 2>&1 || rc=$?
  t1=$(now)
  RUN_S=$(secs "$t0" "$t1")
  RUN_CHANGED=$(awk '/^PLAY RECAP/ {r = 1; next} r && /ok=/ {for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) {split($i, a, "="); s += a[2]}} END {print s + 0}' "$LOGS/$label.log")
  FIG[$label]=$RUN_S
  FIG[$label.changed]=$RUN_CHANGED
  FIG[$label.tasks]=$(grep -c '^TASK \[' "$LOGS/$label.log" || true)
  # profile_tasks' recap: "<role> : <task> ------ 12.34s", after the last line of '='.
  awk '/^=====/ {r = 1; next} r && /-+ [0-9.]+s$/ {
         t = $NF; sub(/s$/, "", t); line = $0; sub(/ -+ [0-9.]+s$/, "", line); printf "%s\t%s\n", t, line }' \
    "$LOGS/$label.log" >"$LOGS/$label.tasks"
  RUNS+=("$label")
  save_state
  ((rc == 0)) || { run_failed "$label" "ansible-playbook exited $rc"; return 1; }
  log "$label: $RUN_S s, changed=$RUN_CHANGED, ${FIG[$label.tasks]} task headers"
}

# run_failed LABEL WHY: mark a timed run as failed, keep why, show the end of its log.
run_failed() {
  local label=$1 why=$2
  FIG[$label]="failed"
  FAILURES+=("$label: $why (see $LOGS/$label.log)")
  log "$label: FAILED ($why), see $LOGS/$label.log"
  tail -n 25 "$LOGS/$label.log" >&2
}

# noop LABEL INVENTORY [args]: a no-op rerun, BENCH_REPEAT times, keeping the fastest.
noop() {
  local label=$1 best="" i
  shift
  for ((i = 1; i <= REPEAT; i++)); do
    play "$label" "$@" || return 1
    if [[ -z $best ]] || awk -v a="$RUN_S" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$RUN_S
    fi
  done
  FIG[$label]=$best
  ((REPEAT == 1)) || NOTE[$label]="fastest of $REPEAT"
  ((${FIG[$label.changed]} == 0)) || NOTE[$label]="NOT a no-op: changed=${FIG[$label.changed]}"
}

# floor LABEL NODE SCRIPT: copy bench/floor into the node (docker cp) and run SCRIPT there
# (docker exec); the time includes both transfers.
floor() {
  local label=$1 node=$PREFIX$2 script=$3 t0 t1 rc=0
  log "$label: floor/$script on $node (load $(loadavg))"
  NOTE[$label.load]=$(loadavg)
  t0=$(now)
  {
    "$DOCKER" cp "$WORK/floor/." "$node:/root/gpufleet-bench-floor" &&
      "$DOCKER" exec -e BENCH_REGISTRY="$GPUFLEET_LAB_REGISTRY" -e BENCH_WWW="$GPUFLEET_LAB_WWW" \
        -e BENCH_DIGEST="$GPUFLEET_LAB_WORKBENCH_DIGEST" "$node" \
        bash "/root/gpufleet-bench-floor/$script"
  } >"$LOGS/$label.log" 2>&1 || rc=$?
  t1=$(now)
  FIG[$label]=$(secs "$t0" "$t1")
  awk -F'\t' '$1 == "FLOOR-STEP" {printf "%s\t%s\n", $2, $3}' "$LOGS/$label.log" >"$LOGS/$label.steps"
  FLOORS+=("$label")
  save_state
  ((rc == 0)) || { run_failed "$label" "floor/$script exited $rc"; return 1; }
  log "$label: ${FIG[$label]} s"
}

# endstate LABEL NODE_A NODE_B: diff the end states (bench/endstate.sh) of two nodes.
endstate() {
  local label=$1 a=$PREFIX$2 b=$PREFIX$3 n
  "$DOCKER" cp "$BENCH_DIR/endstate.sh" "$a:/root/gpufleet-bench-endstate.sh"
  "$DOCKER" cp "$BENCH_DIR/endstate.sh" "$b:/root/gpufleet-bench-endstate.sh"
  "$DOCKER" exec "$a" bash /root/gpufleet-bench-endstate.sh >"$LOGS/$label.ansible.state"
  "$DOCKER" exec "$b" bash /root/gpufleet-bench-endstate.sh >"$LOGS/$label.floor.state"
  diff -u --label "ansible ($a)" --label "floor ($b)" "$LOGS/$label.ansible.state" "$LOGS/$label.floor.state" \
    >"$LOGS/$label.diff" || true
  n=$(grep -c '^[-+][^-+]' "$LOGS/$label.diff" || true)
  FIG[$label]=$n
  DIFFS+=("$label")
  save_state
  if ((n == 0)); then log "$label: end states identical"; else log "$label: $n line(s) differ, see $LOGS/$label.diff"; fi
}

# --- the parts ---------------------------------------------------------------------------
part_docker_fresh() {
  play docker.fresh "$WORK/inv-dk" --tags docker || return 0
  if want docker; then
    floor docker.floor dk-floor docker.sh || return 0
    endstate docker.endstate dk-ans dk-floor
  fi
}

part_site_fresh() {
  if reused n1; then
    # 2b's reference: the fresh converge time of the run that converged node1, when given.
    if isnum "${BENCH_SITE_FRESH_S:-}"; then
      FIG[site.fresh]=$BENCH_SITE_FRESH_S
      NOTE[site.fresh]="given in BENCH_SITE_FRESH_S (earlier run)"
    fi
  else
    play site.fresh "$WORK/inv-n1" || return 0
    "$DOCKER" exec "${PREFIX}n1" touch "$MARKER"
  fi
  if want site; then
    floor site.floor site-floor site.sh || return 0
    endstate site.endstate n1 site-floor
  fi
}

# clone_nodes K...: start scale nodes as clones of the converged node1. `docker commit` takes
# its root filesystem (driver, DKMS build, packages, files), not the nested Docker storage
# (a volume) nor /run: the converge that follows pulls the image, rewrites the per-host
# files (hostname) and restarts the services, but builds no DKMS module.
clone_nodes() {
  local k id pids=() rc=0 pid t0
  t0=$(now)
  CLONE_IMAGE=gpufleet-bench/node-converged:$RUN_ID
  id=$("$DOCKER" exec "${PREFIX}n1" cat /etc/machine-id)
  "$DOCKER" exec "${PREFIX}n1" sh -c ': >/etc/machine-id' # each clone makes its own at boot
  "$DOCKER" commit "${PREFIX}n1" "$CLONE_IMAGE" >/dev/null || rc=1
  "$DOCKER" exec "${PREFIX}n1" sh -c "echo $id >/etc/machine-id"
  ((rc == 0)) || die "docker commit of ${PREFIX}n1 failed"
  for k in "$@"; do
    create_node_from "n$k" "node$k" "$CLONE_IMAGE"
    wait_boot "n$k" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  ((rc == 0)) || die "a cloned node did not boot"
  FIG[scale.clone]=$(secs "$t0" "$(now)")
}

part_scale() {
  local max=$1 i hosts=() k todo=()
  for ((i = 2; i <= max; i++)); do reused "n$i" || todo+=("$i"); done
  if ((${#todo[@]})) && [[ $SCALE_FROM == clone ]]; then
    log "cloning node1 into ${#todo[@]} node(s) (BENCH_SCALE_FROM=clone)"
    clone_nodes "${todo[@]}"
  fi
  for i in "${todo[@]}"; do hosts+=("node$i=${PREFIX}n$i"); done
  if ((${#hosts[@]})); then
    inventory "$WORK/inv-scale-converge" "${hosts[@]}"
    FIG[scale.converge.nodes]=${#hosts[@]}
    # One parallel converge of the nodes node1 does not stand for (forks from ansible.cfg).
    play "scale.converge" "$WORK/inv-scale-converge" || return 0
    for i in "${todo[@]}"; do "$DOCKER" exec "${PREFIX}n$i" touch "$MARKER"; done
  fi
  for k in $NODE_COUNTS; do
    hosts=()
    for ((i = 1; i <= k; i++)); do hosts+=("node$i=${PREFIX}n$i"); done
    inventory "$WORK/inv-scale-$k" "${hosts[@]}"
    noop "scale.noop.$k" "$WORK/inv-scale-$k" || return 0
  done
}

# --- state -------------------------------------------------------------------------------
# Everything render needs, in LOGS/state.sh, so `bench.sh render RUN_ID` can write the report
# again (after an interruption, or with a newer renderer).
save_state() {
  [[ -d $LOGS ]] || return 0
  LOAD_END=$(loadavg)
  DATE_END=$(date -u '+%Y-%m-%d %H:%M UTC')
  TREE="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
  declare -p FIG NOTE RUNS FLOORS DIFFS FAILURES REUSED LOAD_START MOL_START PARTS NODE_COUNTS REPEAT \
    SCALE_FROM LOAD_END DATE_END TREE >"$LOGS/state.sh"
}

# --- report ------------------------------------------------------------------------------
fmt() { [[ -n ${FIG[$1]:-} ]] && echo "${FIG[$1]}" || echo "-"; }
isnum() { [[ ${1:-} =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v <= g ? "ok" : "over") }'; }

row_ratio() { # title ansible_key floor_key goal
  local a=${FIG[$2]:-} f=${FIG[$3]:-} r="-" v="-"
  if isnum "$a" && isnum "$f"; then
    r=$(calc "%.2f" "$a / $f")
    v=$(verdict "$r" "$4")
    r="${r}×"
  fi
  printf '| %s%s | %s s | %s s | %s | ≤ %s× | %s |\n' "$1" "${NOTE[$2]:+ (Ansible figure ${NOTE[$2]})}" "$(fmt "$2")" "$(fmt "$3")" "$r" "$4" "$v"
}

render() {
  local l k base n8 note a f
  echo "# gpufleet.node performance bench, run $RUN_ID"
  echo
  echo "- Date: $DATE_END; machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo) GiB RAM, kernel $(uname -r)"
  echo "- Load average at start: $LOAD_START; at end: $LOAD_END; other lab activity at start: $MOL_START gpufleet-mol-* container(s) (Molecule runs share the 2 cores)"
  echo "- Ansible: $("$VENV/ansible-playbook" --version | awk 'NR == 1'), $(ansible_settings)"
  echo "- Transport: Ansible reaches the nodes with community.docker.docker (one docker exec per command, files put through docker exec + dd); a floor script is one docker cp of bench/floor plus one docker exec, both inside its time"
  echo "- Nodes: $NODE_IMAGE containers with systemd and nested Docker (lab/lab.sh node-flags), prepared like a fresh Debian 12 server (molecule/shared/server.yml) before timing; Ansible ran first, the floor second (warm registry/page cache favours the floor)"
  echo "- Parts: ${PARTS:1:-1}; node counts: $NODE_COUNTS; repeats of no-op runs: $REPEAT; scale nodes: $SCALE_FROM${REUSED[*]:+; reused from an earlier run: ${REUSED[*]}}"
  echo "- Tree: $TREE"
  echo
  echo "## Figures"
  echo
  echo "| measurement | Ansible | floor / reference | ratio | goal | |"
  echo "|---|---|---|---|---|---|"
  if want docker; then row_ratio "1a. fresh converge, Docker stage, 1 node (\`--tags docker\` vs floor/docker.sh)" docker.fresh docker.floor 1.2; fi
  if want site; then
    row_ratio "1b. fresh converge, site.yml, 1 node (vs floor/site.sh)" site.fresh site.floor 1.2
    # The DKMS build inside the driver's package install is the same compile for both and swings
    # with CPU contention: the figure without that one step shows what the collection controls.
    if isnum "${FIG[site.fresh]:-}" && isnum "${FIG[site.floor]:-}" && [[ -s $LOGS/site.floor.steps ]]; then
      a=$(awk -F'\t' '$2 ~ /nvidia_driver : Install the driver packages$/ {print $1; exit}' "$LOGS/site.fresh.tasks" 2>/dev/null)
      f=$(awk -F'\t' '$2 ~ /install the driver \(DKMS build\)/ {print $1; exit}' "$LOGS/site.floor.steps")
      if isnum "$a" && isnum "$f"; then
        FIG[site.fresh.nodkms]=$(calc "%.1f" "${FIG[site.fresh]} - $a")
        FIG[site.floor.nodkms]=$(calc "%.1f" "${FIG[site.floor]} - $f")
        row_ratio "1b'. the same without the driver package install step (DKMS build: Ansible $a s, floor $f s)" site.fresh.nodkms site.floor.nodkms 1.2
      fi
    fi
  fi
  if want noop; then
    k=docker.noop
    if isnum "${FIG[$k]:-}"; then
      printf '| 2a. no-op rerun, Docker stage, 1 node (changed=%s%s) | %s s | - | - | ≤ 4 s per node | %s |\n' \
        "${FIG[$k.changed]}" "${NOTE[$k]:+; ${NOTE[$k]}}" "${FIG[$k]}" "$(verdict "${FIG[$k]}" 4)"
    else
      printf '| 2a. no-op rerun, Docker stage | %s | - | - | ≤ 4 s per node | - |\n' "$(fmt $k)"
    fi
    # The stage alone: the docker role's and apt_helpers' tasks in the (last) no-op run, without
    # ansible-playbook's start-up, the validation play, fact gathering and the fleet_run bookkeeping.
    if [[ -s $LOGS/$k.tasks ]]; then
      read -r n a < <(awk -F'\t' '$2 ~ /^gpufleet\.node\.(docker|apt_helpers) : / {s += $1; n++} END {printf "%d %.1f\n", n, s}' "$LOGS/$k.tasks")
      printf "| 2a'. the same, the Docker stage's own %s tasks only (profile_tasks sum of the last run) | %s s | %s s (whole command) | - | ≤ 4 s per node | %s |\n" \
        "$n" "$a" "${FIG[$k]:-}" "$(verdict "$a" 4)"
    fi
    k=site.noop
    if isnum "${FIG[$k]:-}" && isnum "${FIG[site.fresh]:-}"; then
      printf '| 2b. no-op rerun, site.yml, 1 node (changed=%s%s) | %s s | %s s (fresh converge%s) | %s %% | ≤ 10 %% | %s |\n' \
        "${FIG[$k.changed]}" "${NOTE[$k]:+; ${NOTE[$k]}}" "${FIG[$k]}" "${FIG[site.fresh]}" "${NOTE[site.fresh]:+, ${NOTE[site.fresh]}}" \
        "$(calc "%.1f" "100 * ${FIG[$k]} / ${FIG[site.fresh]}")" "$(verdict "$(calc "%.4f" "${FIG[$k]} / ${FIG[site.fresh]}")" 0.10)"
    else
      printf '| 2b. no-op rerun, site.yml | %s | %s | - | ≤ 10 %% | - |\n' "$(fmt $k)" "$(fmt site.fresh)"
    fi
  fi
  if want scale; then
    base=${FIG[scale.noop.1]:-}
    for n in $NODE_COUNTS; do
      k=scale.noop.$n
      note=""
      [[ -n ${FIG[$k.changed]:-} ]] && note=" (changed=${FIG[$k.changed]}${NOTE[$k]:+; ${NOTE[$k]}})"
      if ((n > 1)) && isnum "${FIG[$k]:-}" && isnum "$base"; then
        l=$(calc "%.2f" "${FIG[$k]} / $base")
        printf '| 3. no-op rerun, site.yml, %s nodes%s | %s s | %s s (1 node) | %s× | %s | %s |\n' "$n" "$note" \
          "${FIG[$k]}" "$base" "$l" "$([[ $n == 8 ]] && echo "≤ 2.0×" || echo "(≤ 2.0× at 8)")" "$(verdict "$l" 2.0)"
      else
        printf '| 3. no-op rerun, site.yml, %s node(s)%s | %s s | - | - | - | - |\n' "$n" "$note" "$(fmt "$k")"
      fi
    done
    if [[ -n ${FIG[scale.converge]:-} ]]; then
      n8=${FIG[scale.converge.nodes]}
      if [[ $SCALE_FROM == clone ]]; then
        printf '| converge of %s clone(s) of node1 in one parallel site.yml run (forks %s; no DKMS build, image pulled; cloning took %s s) | %s s | %s s (1 node fresh) | - | - | info |\n' \
          "$n8" "$(ansible_forks)" "$(fmt scale.clone)" "$(fmt scale.converge)" "$(fmt site.fresh)"
      else
        printf '| fresh converge of %s more node(s) in one parallel site.yml run (forks %s) | %s s | %s s (1 node fresh) | - | - | info |\n' \
          "$n8" "$(ansible_forks)" "$(fmt scale.converge)" "$(fmt site.fresh)"
      fi
    fi
  fi
  if want pipelining; then
    for k in docker.noop site.noop; do
      if isnum "${FIG[$k.pipelining]:-}" && isnum "${FIG[$k]:-}"; then
        printf '| tuning: %s with ANSIBLE_PIPELINING=True (changed=%s) | %s s | %s s (as configured) | %s× | - | info |\n' \
          "$k" "${FIG[$k.pipelining.changed]}" "${FIG[$k.pipelining]}" "${FIG[$k]}" "$(calc "%.2f" "${FIG[$k.pipelining]} / ${FIG[$k]}")"
      fi
    done
  fi
  for l in "${DIFFS[@]}"; do
    printf '| end state, Ansible node vs floor node (%s) | %s differing line(s) | - | - | 0 | %s |\n' \
      "${l%%.*}" "${FIG[$l]}" "$([[ ${FIG[$l]} == 0 ]] && echo ok || echo "see $l.diff")"
  done
  echo
  echo "Times are wall clock on the controller, the whole ansible-playbook command (startup included) or the whole floor transfer and run. Logs: bench/results/$RUN_ID/."
  if ((${#FAILURES[@]})); then
    echo
    echo "**Not measured:**"
    for l in "${FAILURES[@]}"; do echo "- $l"; done
  fi
  echo
  echo "## Where the time goes: top 15 tasks per Ansible run (profile_tasks)"
  for l in "${RUNS[@]}"; do
    [[ -s $LOGS/$l.tasks ]] || continue
    echo
    echo "### $l: ${FIG[$l]} s, changed=${FIG[$l.changed]}, ${FIG[$l.tasks]} task headers, load at start ${NOTE[$l.load]}"
    echo
    echo "| s | task |"
    echo "|---:|---|"
    # awk, not head: head's early exit would SIGPIPE sort, and pipefail would end the report.
    sort -t$'\t' -k1,1gr "$LOGS/$l.tasks" | awk -F'\t' 'NR <= 15 {gsub(/\|/, "\\|", $2); printf "| %s | %s |\n", $1, $2}'
    awk -F'\t' '{s += $1; n++} END {printf "\nAll %d tasks: %.1f s (profile_tasks sum).\n", n, s}' "$LOGS/$l.tasks"
  done
  if ((${#FLOORS[@]})); then
    echo
    echo "## Floor scripts: steps"
    for l in "${FLOORS[@]}"; do
      echo
      echo "### $l: ${FIG[$l]} s, load at start ${NOTE[$l.load]}"
      echo
      echo "| s | step |"
      echo "|---:|---|"
      awk -F'\t' '{printf "| %s | %s |\n", $1, $2}' "$LOGS/$l.steps"
    done
  fi
  if ((${#DIFFS[@]})); then
    echo
    echo "## End state: Ansible node vs floor node"
    for l in "${DIFFS[@]}"; do
      echo
      if [[ ${FIG[$l]} == 0 ]]; then
        echo "- $l: identical (packages and versions, holds, manual marks, managed files' mode/owner/content, units, images, containers)"
      else
        echo "- $l: ${FIG[$l]} differing line(s):"
        echo
        echo '```diff'
        grep '^[-+][^-+]' "$LOGS/$l.diff" | awk 'NR <= 40'
        echo '```'
      fi
    done
  fi
}

ansible_forks() { "$VENV/ansible-config" dump 2>/dev/null | awk -F' = ' '/^DEFAULT_FORKS/ {print $2}'; }

# The settings in effect, as ansible-config reports them for ansible.cfg.
ansible_settings() {
  local dump conn
  dump=$("$VENV/ansible-config" dump 2>/dev/null)
  conn=$("$VENV/ansible-config" dump -t connection 2>/dev/null | awk '/^ssh:/ {s = 1} s && /^pipelining/ {print; exit}')
  printf 'config %s: forks=%s, strategy=%s, gathering=%s (plays gather_subset=min once per run), fact cache=%s, pipelining: ANSIBLE_PIPELINING=%s (what community.docker.docker uses), ssh %s (ssh only)' \
    "${ANSIBLE_CONFIG#"$REPO_ROOT"/}" \
    "$(awk -F' = ' '/^DEFAULT_FORKS/ {print $2}' <<<"$dump")" \
    "$(awk -F' = ' '/^DEFAULT_STRATEGY\(/ {print $2}' <<<"$dump")" \
    "$(awk -F' = ' '/^DEFAULT_GATHERING/ {print $2}' <<<"$dump")" \
    "$(awk -F' = ' '/^CACHE_PLUGIN\(/ {print $2}' <<<"$dump")" \
    "$(awk -F' = ' '/^ANSIBLE_PIPELINING/ {print $2}' <<<"$dump")" \
    "${conn:-pipelining=?}"
}

# --- main --------------------------------------------------------------------------------
main() {
  local max=1 n nodespecs=()
  [[ $(id -u) == 0 ]] || die "run as root (the lab's Docker)"
  [[ -x $VENV/ansible-playbook ]] || die ".venv missing: run make lab or bash lab/lab.sh prereqs"
  [[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive number"
  [[ $SCALE_FROM == fresh || $SCALE_FROM == clone ]] || die "BENCH_SCALE_FROM must be fresh or clone"
  for n in ${PARTS//,/ }; do
    [[ " docker site noop scale pipelining " == *" $n "* ]] || die "BENCH holds '$n': parts are docker, site, noop, scale, pipelining"
  done
  for n in $NODE_COUNTS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_NODES holds '$n', not a node count"
    ((n > max)) && max=$n
  done
  # One bench at a time: node names are fixed.
  exec 8>/run/gpufleet-bench.lock
  flock -n 8 || die "another bench runs (lock /run/gpufleet-bench.lock)"
  "$DOCKER" image inspect "$NODE_IMAGE" >/dev/null 2>&1 || die "$NODE_IMAGE missing: run make lab (or bash lab/lab.sh image)"
  # The registry, web server and stand-in image; each is idempotent and takes about a second when done.
  bash lab/lab.sh registry >/dev/null || die "lab registry/web server did not start (bash lab/lab.sh registry)"
  bash lab/lab.sh standin-image >/dev/null || die "stand-in workbench image missing (bash lab/lab.sh standin-image)"
  eval "$(bash lab/lab.sh env)"
  [[ -n ${GPUFLEET_LAB_WORKBENCH_DIGEST:-} ]] || die "no workbench digest from lab/lab.sh env"

  mkdir -p "$LOGS"
  WORK=$(mktemp -d /tmp/gpufleet-bench.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  LOAD_START=$(loadavg)
  MOL_START=$(mol_count)
  log "run $RUN_ID: parts ${PARTS:1:-1}; load $LOAD_START; $MOL_START Molecule container(s) running"

  # What the floor scripts need in the node: the scripts, the lab login key, the torch probe.
  mkdir -p "$WORK/floor"
  cp "$BENCH_DIR"/floor/*.sh "$WORK/floor/"
  # The lab group_vars read the login key from the same place (GPUFLEET_LAB_STATE).
  cp "${GPUFLEET_LAB_STATE:-/var/lib/gpufleet-lab}/ssh/researcher_ed25519.pub" "$WORK/floor/researcher.pub" 2>/dev/null ||
    die "lab SSH key ${GPUFLEET_LAB_STATE:-/var/lib/gpufleet-lab}/ssh/researcher_ed25519.pub missing (bash lab/lab.sh prereqs)"
  cp plugins/module_utils/_torch_probe.py "$WORK/floor/torch_probe.py"
  cp roles/ssh_container/files/sshd-entrypoint.sh "$WORK/floor/sshd-entrypoint.sh"

  # Every node first (in parallel), so no preparation runs during a measurement.
  if want docker || want noop || want pipelining; then nodespecs+=(dk-ans:node1); fi
  if want docker; then nodespecs+=(dk-floor:node1); fi
  if want site || want noop || want scale || want pipelining; then reuse n1 || nodespecs+=(n1:node1); fi
  if want site; then nodespecs+=(site-floor:node1); fi
  if want scale; then
    for ((n = 2; n <= max; n++)); do
      reuse "n$n" || [[ $SCALE_FROM == clone ]] || nodespecs+=("n$n:node$n")
    done
  fi
  if ((${#nodespecs[@]})); then
    log "starting ${#nodespecs[@]} node(s): ${nodespecs[*]%%:*}"
    nodes "${nodespecs[@]}"
  fi
  log "nodes ready; load $(loadavg)"
  inventory "$WORK/inv-dk" "node1=${PREFIX}dk-ans"
  inventory "$WORK/inv-n1" "node1=${PREFIX}n1"

  if want docker || want noop || want pipelining; then
    part_docker_fresh
    if want noop || want pipelining; then noop docker.noop "$WORK/inv-dk" --tags docker || true; fi
    if want pipelining && [[ -n ${FIG[docker.noop.changed]:-} ]]; then
      ANSIBLE_PIPELINING=True play docker.noop.pipelining "$WORK/inv-dk" --tags docker || true
    fi
  fi
  if want site || want noop || want scale || want pipelining; then
    part_site_fresh
    if isnum "${FIG[site.fresh]:-}" || reused n1; then
      if want noop || want pipelining; then noop site.noop "$WORK/inv-n1" || true; fi
      if want pipelining && [[ -n ${FIG[site.noop.changed]:-} ]]; then
        ANSIBLE_PIPELINING=True play site.noop.pipelining "$WORK/inv-n1" || true
      fi
      if want scale; then part_scale "$max"; fi
    fi
  fi

  save_state
  render | tee "$REPORT"
  log "results: ${REPORT#"$REPO_ROOT"/} (logs in ${LOGS#"$REPO_ROOT"/}/)"
  if ((${#FAILURES[@]})); then
    log "some figures could not be measured:"
    printf '  %s\n' "${FAILURES[@]}" >&2
    exit 2
  fi
}

# `bench.sh render RUN_ID`: the report of an earlier run again, from its state.sh.
if [[ ${1:-} == render ]]; then
  RUN_ID=${2:?usage: bench.sh render RUN_ID}
  LOGS=$RESULTS_DIR/$RUN_ID
  REPORT=$RESULTS_DIR/$RUN_ID.md
  [[ -f $LOGS/state.sh ]] || die "no $LOGS/state.sh"
  # shellcheck source=/dev/null
  . "$LOGS/state.sh"
  render | tee "$REPORT"
  exit
fi

# On one line with main: bash reads scripts as it runs them, so an edit during a run cannot
# add commands after it.
main "$@"; exit
