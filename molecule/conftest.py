"""Fixtures shared by the Molecule scenarios' testinfra tests.

Tests act as a sysadmin would: they look at the nodes through testinfra and run
ansible-playbook against the scenario's inventory to see what a re-run does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


class PlaybookRun:
    """The outcome of one ansible-playbook run, with its PLAY RECAP parsed."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                      for m in RECAP.finditer(proc.stdout)}

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    @property
    def unchanged(self) -> bool:
        """Every host reached the recap with changed=0."""
        return bool(self.recap) and set(self.changed().values()) == {0}

    @property
    def clean(self) -> bool:
        """The run succeeded and changed nothing (a converged host, or --check on one)."""
        return self.returncode == 0 and self.unchanged

    def task(self, name: str) -> str:
        """The output lines of the first task whose header contains ``name`` ("" when it never ran)."""
        marker = f"TASK [{name}]"
        if marker not in self.stdout:
            return ""
        return self.stdout.split(marker, 1)[1].split("\nTASK [", 1)[0].split("\nRUNNING HANDLER [", 1)[0]

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"PlaybookRun(rc={self.returncode}, recap={self.recap})\n{self.stdout[-6000:]}"


@pytest.fixture(scope="session")
def lab_registry() -> str:
    return os.environ.get("GPUFLEET_LAB_REGISTRY", "172.17.0.1:5000")


@pytest.fixture(scope="session")
def lab_www() -> str:
    return os.environ.get("GPUFLEET_LAB_WWW", "http://172.17.0.1:8088")


@pytest.fixture(scope="session")
def busybox_image(lab_registry) -> str:
    """A tiny image that lab/lab.sh pushed to the lab registry."""
    return f"{lab_registry}/lab/busybox:1"


@pytest.fixture
def limit(host):
    """`--limit` to the node under test: testinfra runs each test once per node."""
    return ("--limit", host.backend.get_hostname())


@pytest.fixture(scope="session")
def playbook():
    """Run a playbook of the scenario (or any path) against the scenario's nodes."""
    scenario_dir = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]

    def run(name: str, *args: str, inventory: str = inventory, timeout: int = 900) -> PlaybookRun:
        path = Path(name) if Path(name).is_absolute() else scenario_dir / name
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", inventory, str(path), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
            # one result per line (json), so messages can be matched whole
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
                 "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "COLUMNS": "200"},
        )
        proc.stdout += proc.stderr
        return PlaybookRun(proc)

    return run
