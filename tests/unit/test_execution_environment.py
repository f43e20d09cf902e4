"""The execution environment for AWX / Automation Platform: `make ee`'s create step, run offline
into a temporary folder, and what its build context must hold for the image to run this collection
as it is tested here."""

import ast
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import ansible
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULE_UTILS = "ansible_collections.gpufleet.node.plugins.module_utils"
# Plugins of other collections that import a Python package of their own.
PLUGIN_PYTHON_NEEDS = {"community.general.json_query": "jmespath"}
ANSIBLE_YAML = [*ROOT.glob("roles/**/*.yml"), *ROOT.glob("playbooks/*.yml"), ROOT / "site.yml"]


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def galaxy_version():
    return load(ROOT / "galaxy.yml")["version"]


def imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def controller_code():
    """Filters, lookups and the like, and the module_utils they import: what runs in the EE.
    Modules (and what only they import) run on the nodes."""
    todo = [p for p in (ROOT / "plugins").rglob("*.py") if p.parent.name not in {"modules", "module_utils"}]
    seen = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports(path):
            if name.startswith(f"{MODULE_UTILS}."):
                util = ROOT / "plugins" / "module_utils" / f"{name.split('.')[5]}.py"
                if util.is_file():
                    todo.append(util)
    return sorted(seen)


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    builder = BIN / "ansible-builder"
    if not builder.exists():
        pytest.skip(f"ansible-builder is not installed in {BIN.parent} (requirements.txt pins it)")
    work = tmp_path_factory.mktemp("ee")
    # The definition names the tarball relative to itself: build it beside a copy.
    shutil.copy(ROOT / "execution-environment.yml", work)
    subprocess.run([BIN / "ansible-galaxy", "collection", "build", str(ROOT), "--output-path",
                    str(work / "build" / "collection")], check=True, capture_output=True)
    subprocess.run([builder, "create", "--file", str(work / "execution-environment.yml"),
                    "--context", str(work / "ee"), "--output-filename", "Containerfile"],
                   check=True, capture_output=True)
    return work / "ee"


@pytest.fixture(scope="module")
def definition():
    return load(ROOT / "execution-environment.yml")


@pytest.fixture(scope="module")
def galaxy_requirements(context):
    return load(context / "_build" / "requirements.yml")["collections"]


def containerfile_arg(context, name):
    match = re.search(rf'^ARG {name}="([^"]*)"$', (context / "Containerfile").read_text(), re.MULTILINE)
    assert match, f"no ARG {name} in the Containerfile"
    return match.group(1)


def test_containerfile_is_built_from_the_pinned_base_image(context, definition):
    base = definition["images"]["base_image"]["name"]
    assert containerfile_arg(context, "EE_BASE_IMAGE") == base
    froms = re.findall(r"^FROM (\S+)", (context / "Containerfile").read_text(), re.MULTILINE)
    assert froms[0] == "$EE_BASE_IMAGE"
    # A digest, or at least a release tag: never a moving "latest" or no tag at all.
    tag = re.fullmatch(r"[^:@]+(?::[^:/@]+)?:(?P<tag>[\w][\w.-]*)(?:@sha256:[0-9a-f]{64})?", base)
    assert "@sha256:" in base or (tag and tag["tag"] != "latest"), base


def test_context_holds_the_collection_at_galaxy_yml_version(context):
    version = galaxy_version()
    tarball = context / "_build" / "collections" / f"gpufleet-node-{version}.tar.gz"
    assert tarball.is_file(), sorted(p.name for p in (context / "_build").rglob("*.tar.gz"))
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
        names = tar.getnames()
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("gpufleet", "node", version)
    assert "roles/gpu_verify/tasks/main.yml" in names
    # An earlier context or the definition itself never travels inside the collection.
    assert [n for n in names if n.split("/")[0] in {"build", "execution-environment.yml"}] == []


def test_galaxy_requirements_install_this_collection_from_the_context(context, galaxy_requirements):
    version = galaxy_version()
    local = [c for c in galaxy_requirements if c.get("type") == "file"]
    assert local == [{"name": f"collections/gpufleet-node-{version}.tar.gz", "type": "file"}]
    # ansible-galaxy runs in /build, the image's copy of _build/.
    assert (context / "_build" / local[0]["name"]).is_file()


def test_galaxy_requirements_pin_every_collection_the_code_uses(galaxy_requirements):
    used = set(load(ROOT / "galaxy.yml")["dependencies"])
    for path in ANSIBLE_YAML:
        used.update(re.findall(r"\b((?:community|ansible)\.[a-z_]+)\.[a-z_]+", path.read_text()))
    used -= {"ansible.builtin", "ansible.legacy"}
    pinned = {c["name"]: c.get("version") for c in galaxy_requirements if c.get("type") != "file"}
    assert sorted(used - set(pinned)) == []
    # Pinned to the versions tested here: those the `ansible` package of requirements.txt bundles.
    site_packages = Path(ansible.__file__).parents[1]
    for name, version in pinned.items():
        manifest = site_packages / "ansible_collections" / name.replace(".", "/") / "MANIFEST.json"
        assert version == json.loads(manifest.read_text())["collection_info"]["version"], name


def test_python_requirements_cover_what_the_collection_needs(context):
    controller_pins = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    refs = dict(re.fullmatch(r"([\w.-]+)(?:==(.+))?", ref).groups()
                for ref in containerfile_arg(context, "ANSIBLE_INSTALL_REFS").split())
    assert refs.get("ansible-core") == controller_pins["ansible-core"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", refs.get("ansible-runner") or ""), refs
    # Anything else the controller-side code imports must reach the image through
    # dependencies.python (written to _build/requirements.txt).
    requirements = context / "_build" / "requirements.txt"
    provided = {re.split(r"[<>=!~\[; ]", line)[0].lower().replace("_", "-")
                for line in (requirements.read_text().splitlines() if requirements.exists() else [])
                if line.strip() and not line.startswith("#")}
    code = controller_code()
    assert ROOT / "plugins" / "filter" / "gpu_verify.py" in code
    needed = {name.split(".")[0] for path in code for name in imports(path)}
    needed -= {*sys.stdlib_module_names, "__future__", "ansible", "ansible_collections"}
    for path in ANSIBLE_YAML:
        text = path.read_text()
        needed.update(package for plugin, package in PLUGIN_PYTHON_NEEDS.items() if plugin in text)
    assert sorted(n.replace("_", "-") for n in needed if n.replace("_", "-") not in provided) == []
