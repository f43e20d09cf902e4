#!/usr/bin/env bash
# Opens a fleet report in headless Chromium and keeps a screenshot of it (docs/fleet-report.png).
# usage: docs/screenshot-report.sh [REPORT_HTML] [PNG]
# Needs Debian's chromium (apt-get install chromium). Chromium reads the local file only: the
# report is self-contained, and the flags keep it from calling out to anything.
set -euo pipefail
html=$(realpath "${1:-fleet-report/fleet-report.html}")
png=$(realpath -m "${2:-docs/fleet-report.png}")
[[ -f $html ]] || { echo "no report at $html: run playbooks/verify.yml first" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1500,420 \
  --screenshot="$png" "file://$html" 2>/dev/null
echo "wrote $png"
