#!/usr/bin/env bash
# The controller-side tests on the oldest ansible-core the collection claims (2.17): every unit
# test that runs ansible-playbook, ansible-doc or ansible-galaxy, in a venv of its own
# (.venv-2.17, from tests/oldest/requirements.txt). The Molecule scenarios run on 2.19 only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
venv=$PWD/.venv-2.17
req=tests/oldest/requirements.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $venv/.requirements.sha256 || $(<"$venv/.requirements.sha256") != "$want" ]]; then
  "${LAB_PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$venv/.requirements.sha256"
fi
"$venv/bin/ansible" --version | head -1
# The venv's own ansible-playbook comes first on PATH; the tests find it next to sys.executable.
PATH="$venv/bin:$PATH" exec "$venv/bin/pytest" -q -p no:cacheprovider -n auto --dist loadfile \
  tests/unit/test_bad_input.py tests/unit/test_lock_playbook.py tests/unit/test_collection.py \
  tests/unit/test_plugin_docs.py tests/unit/test_internal_roles.py tests/unit/plugins/modules/test_node_state_module.py "$@"
