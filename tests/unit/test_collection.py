"""Checks of the collection as a whole: metadata, role APIs, the release tarball."""

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def load(path):
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_name_the_same_variables(role):
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    spec = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(spec)


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_name(role):
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    assert [name for name in defaults if not name.startswith(f"{role}_")] == []


@pytest.mark.parametrize("role", ROLES)
def test_every_role_documents_every_variable(role):
    readme = (ROOT / "roles" / role / "README.md").read_text()
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    assert [name for name in defaults if f"`{name}`" not in readme] == []


def test_galaxy_metadata():
    galaxy = load(ROOT / "galaxy.yml")
    assert (galaxy["namespace"], galaxy["name"]) == ("gpufleet", "node")
    assert load(ROOT / "meta" / "runtime.yml")["requires_ansible"] == ">=2.17.0"


def test_release_tarball_installs_without_lab_artifacts(tmp_path):
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    subprocess.run([galaxy, "collection", "build", str(ROOT), "--output-path", str(tmp_path)],
                   check=True, capture_output=True)
    tarball = next(tmp_path.glob("gpufleet-node-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "roles/docker/tasks/main.yml" in names
    assert "plugins/module_utils/_daemon_json.py" in names
    # What ships, and nothing else (a build run in a used checkout sees its logs, venvs and lab
    # state): ansible-test sanity on the tarball reads its ignore files, so they are all of tests/.
    shipped = re.compile(r"(MANIFEST\.json|FILES\.json|README\.md|LICENSE|CHANGELOG\.md|requirements\.yml"
                         r"|site\.yml|meta(/runtime\.yml)?|(roles|plugins|playbooks|changelogs)(/.*)?"
                         r"|inventories(/example(/.*)?)?|docs(/fleet-report\.png)?"
                         r"|tests(/sanity(/ignore-[0-9.]+\.txt)?)?)")
    assert [n for n in names if not shipped.fullmatch(n)] == []
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "tests/sanity/ignore-2.19.txt" in names
    install_dir = tmp_path / "installed"
    # --force: this checkout is itself on ansible.cfg's collections_path
    install = ["collection", "install", "--offline", "--no-deps", "--force", "-p", str(install_dir), str(tarball)]
    subprocess.run([galaxy, *install], check=True, capture_output=True)
    assert (install_dir / "ansible_collections/gpufleet/node/roles/docker/meta/argument_specs.yml").is_file()
    # From the installed copy only (run outside the checkout, whose ansible.cfg and collections/
    # link would resolve the FQCNs instead): a module, a filter and the collection's playbooks.
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "probe.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - gpufleet.node.node_state:\n        read: [probe.txt]\n      register: state\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"{{ ['/bin/echo', '100%'] | gpufleet.node.systemd_exec }}"
        " {{ state | gpufleet.node.node_state_file_content('probe.txt') | trim }}\"\n")
    (work / "probe.txt").write_text("from-the-tarball\n")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_COLLECTIONS_PATH": str(install_dir), "ANSIBLE_CONFIG": str(work / "none.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    run = subprocess.run([playbook, "-i", "localhost,", "-c", "local", "probe.yml"], cwd=work, env=env,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"msg": "/bin/echo \\"100%%\\" from-the-tarball"' in run.stdout, run.stdout
    for name in ("gpufleet.node.site", "gpufleet.node.verify", "gpufleet.node.upgrade_driver"):
        check = subprocess.run([playbook, "-i", "localhost,", name, "--syntax-check"], cwd=work, env=env,
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, (name, check.stdout + check.stderr)


def test_changelog_is_what_antsibull_changelog_generates(tmp_path):
    """CHANGELOG.md is generated (antsibull-changelog) from changelogs/changelog.yaml, whose
    newest release is galaxy.yml's version; a hand edit, or a release not written back, fails."""
    changelog = load(ROOT / "changelogs" / "changelog.yaml")
    version = load(ROOT / "galaxy.yml")["version"]
    assert version in changelog["releases"], f"galaxy.yml says {version}; changelog.yaml has no such release"
    shutil.copy(ROOT / "galaxy.yml", tmp_path)
    shutil.copytree(ROOT / "changelogs", tmp_path / "changelogs")
    tool = Path(sys.executable).parent / "antsibull-changelog"
    subprocess.run([tool, "generate"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "CHANGELOG.md").read_text() == (ROOT / "CHANGELOG.md").read_text(), \
        "CHANGELOG.md differs from `antsibull-changelog generate`: add a fragment, never edit it by hand"
    lint = subprocess.run([tool, "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout + lint.stderr
