#!/usr/bin/env bash
# Writes the pip bootstrap script ansible-test would download, for machines that cannot reach
# ci-files.testing.ansible.com (ours reach PyPI only). ansible-test creates each sanity test's
# virtualenv without pip and runs ~/.ansible/test/cache/get_pip_<version>.py in it with pip
# install arguments ("pip==24.2") plus get-pip's own --no-setuptools/--no-wheel. This stand-in
# gets pip from the interpreter's ensurepip, then lets that pip install the pinned pip from PyPI,
# so every sanity test still installs its own pinned requirements.
# Usage: tests/sanity/pip-bootstrap.sh [python]   (the Python that runs ansible-test)
set -euo pipefail
python=${1:-python3}

# The pip version this ansible-test pins (python_requirements.py: pip='24.2').
version=$("$python" - <<'PY'
import pathlib, re
import ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)
"$python" -c 'import ensurepip' 2>/dev/null ||
  { echo "pip-bootstrap: $python has no ensurepip (Debian: apt-get install python3-venv)" >&2; exit 1; }

cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
target=$cache/get_pip_${version//./_}.py
cat >"$target.tmp" <<'PY'
"""Offline stand-in for get-pip.py, written by gpufleet.node's tests/sanity/pip-bootstrap.sh."""
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True,
               stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True)
# get-pip.py installs only what it is asked for; Python 3.11's ensurepip also brings setuptools.
unwanted = [name for flag, name in (("--no-setuptools", "setuptools"), ("--no-wheel", "wheel"))
            if flag in sys.argv[1:]]
if unwanted:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *unwanted],
                   check=True, stderr=subprocess.DEVNULL)
PY
mv "$target.tmp" "$target"
echo "pip-bootstrap: wrote $target (pip $version via ensurepip and PyPI)"
