"""Every plugin shows in ansible-doc (STYLE.md 18): modules and lookups with DOCUMENTATION and
EXAMPLES, each filter with a YAML sidecar (plugins/filter/<name>.yml) that matches its Python
signature, and every role with meta/argument_specs.yml in the role listing.

One ansible-doc call per plugin type, with every name at once (--json), run from the checkout so
ansible.cfg's collections_path resolves gpufleet.node through collections/.
"""

import importlib
import inspect
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
COLLECTION = "gpufleet.node"
ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"

# The option type a filter's documentation must give a parameter, by the type of its Python default.
TYPE_OF_DEFAULT = {bool: "bool", int: "int", str: "str", tuple: "list", list: "list", dict: "dict"}


def python_plugins(kind):
    return sorted(p.stem for p in (PLUGINS / kind).glob("*.py") if p.stem != "__init__")


def filter_functions():
    """Filter name -> function, from each plugins/filter/*.py FilterModule."""
    found = {}
    for stem in python_plugins("filter"):
        module = importlib.import_module(f"ansible_collections.gpufleet.node.plugins.filter.{stem}")
        for name, func in module.FilterModule().filters().items():
            assert name not in found, f"filter {name} is defined twice (again in plugins/filter/{stem}.py)"
            found[name] = func
    return found


FILTERS = filter_functions()
PLUGIN_NAMES = {"filter": sorted(FILTERS), "module": python_plugins("modules"), "lookup": python_plugins("lookup")}
DOCUMENTED = [(kind, name) for kind, names in PLUGIN_NAMES.items() for name in names]
ROLES_WITH_SPECS = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def ansible_doc(*args):
    """(returncode, the parsed --json output or {}, stderr)."""
    result = subprocess.run([str(ANSIBLE_DOC), "--json", *args], cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=120)
    try:
        output = json.loads(result.stdout) if result.returncode == 0 else {}
    except ValueError:
        output = {}
    return result.returncode, output, result.stderr


@cache
def plugin_docs(kind):
    """FQCN -> ansible-doc's entry, or the error text where it has none.

    ansible-doc prints nothing at all when one of the names has no documentation: the names its
    error mentions are taken out and the others asked again, so each test names its own error."""
    remaining = [f"{COLLECTION}.{name}" for name in PLUGIN_NAMES[kind]]
    found = {}
    while remaining:
        returncode, docs, stderr = ansible_doc("-t", kind, *remaining)
        if returncode == 0:
            found.update({fqcn: docs.get(fqcn, f"not in ansible-doc's output: {stderr}") for fqcn in remaining})
            break
        failed = [fqcn for fqcn in remaining if re.search(rf"\b{re.escape(fqcn)}\b", stderr)] or remaining
        found.update(dict.fromkeys(failed, stderr or f"ansible-doc exited {returncode}"))
        remaining = [fqcn for fqcn in remaining if fqcn not in failed]
    return found


@cache
def role_list():
    returncode, listed, stderr = ansible_doc("-t", "role", "-l", COLLECTION)
    assert returncode == 0, stderr
    return listed


def test_plugins_are_found():
    assert PLUGIN_NAMES["filter"]
    assert PLUGIN_NAMES["module"]
    assert PLUGIN_NAMES["lookup"]


def test_every_filter_has_a_sidecar_and_no_sidecar_is_orphaned():
    sidecars = {p.stem for p in (PLUGINS / "filter").glob("*.y*ml")}
    assert sorted(set(FILTERS) - sidecars) == [], "filters without plugins/filter/<name>.yml"
    assert sorted(sidecars - set(FILTERS)) == [], "sidecars of no filter (renamed or removed?)"


@pytest.mark.parametrize(("kind", "name"), DOCUMENTED, ids=[f"{k}-{n}" for k, n in DOCUMENTED])
def test_plugin_is_documented(kind, name):
    fqcn = f"{COLLECTION}.{name}"
    entry = plugin_docs(kind)[fqcn]
    assert isinstance(entry, dict), f"ansible-doc -t {kind} shows no documentation for {fqcn}: {entry}"
    doc = entry.get("doc") or {}
    assert str(doc.get("short_description") or "").strip(), f"{fqcn} has no short_description"
    assert doc.get("description"), f"{fqcn} has no description"
    assert doc.get("author"), f"{fqcn} has no author"
    assert str(entry.get("examples") or "").strip(), f"{fqcn} has no EXAMPLES"
    assert doc.get("name", name) == name


@pytest.mark.parametrize("name", PLUGIN_NAMES["filter"])
def test_filter_docs_match_the_signature(name):
    sidecar = yaml.safe_load((PLUGINS / "filter" / f"{name}.yml").read_text())
    assert sorted(sidecar) == ["DOCUMENTATION", "EXAMPLES", "RETURN"]
    assert isinstance(sidecar["EXAMPLES"], str)
    assert f"{COLLECTION}.{name}" in sidecar["EXAMPLES"], "EXAMPLES should use the filter by its FQCN"
    assert "_value" in (sidecar["RETURN"] or {}), "RETURN documents the result as _value"
    doc = sidecar["DOCUMENTATION"]
    assert doc["name"] == name
    assert doc.get("version_added")

    params = list(inspect.signature(FILTERS[name]).parameters.values())
    options = doc.get("options") or {}
    assert options.get("_input", {}).get("required") is True, "the filter's input is _input, required"
    assert sorted(options) == sorted(["_input"] + [p.name for p in params[1:]])
    positional = [word.strip() for word in str(doc.get("positional") or "").split(",") if word.strip()]
    assert positional == [p.name for p in params[1:]], "positional lists the arguments in the signature's order"
    for param in params[1:]:
        option = options[param.name]
        has_default = param.default is not inspect.Parameter.empty
        assert bool(option.get("required")) is not has_default, f"{param.name}: required only without a default"
        wanted = TYPE_OF_DEFAULT.get(type(param.default)) if has_default else None
        if wanted:
            assert option.get("type") == wanted, f"{param.name} defaults to {param.default!r}: type {wanted}"


@pytest.mark.parametrize("role", ROLES_WITH_SPECS)
def test_role_is_listed_with_its_entry_points(role):
    fqcn = f"{COLLECTION}.{role}"
    listed = role_list()
    assert fqcn in listed, f"ansible-doc -t role -l {COLLECTION} does not list {fqcn}"
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    entry_points = listed[fqcn]["entry_points"]
    assert sorted(entry_points) == sorted(specs)
    assert all(str(text).strip() for text in entry_points.values()), "every entry point has a short_description"
