import json

import pytest
from ansible_collections.gpufleet.node.plugins.module_utils._daemon_json import (
    DaemonJsonError,
    merge_daemon_json,
    ordered_fragments,
    parse_daemon_json,
    render_daemon_json,
)

# What a host's daemon.json looks like after a site tool and an admin edited it.
SITE_FILE = json.dumps(
    {
        "bip": "10.99.0.1/24",
        "log-opts": {"max-size": "10m", "labels": "team"},
        "metrics-addr": "127.0.0.1:9323",
    }
)

MANAGED = {"live-restore": True, "log-driver": "json-file", "log-opts": {"max-size": "100m", "max-file": "5"}}


@pytest.mark.parametrize("text", ["", "   \n", None])
def test_missing_or_empty_file_is_an_empty_object(text):
    assert parse_daemon_json(text) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "must hold a JSON object, found list"),
        ("42", "must hold a JSON object, found int"),
    ],
)
def test_broken_file_is_refused_with_a_reason(text, message):
    with pytest.raises(DaemonJsonError, match=message):
        merge_daemon_json(text, MANAGED)


def test_keys_nobody_manages_survive_and_managed_keys_win():
    merged = merge_daemon_json(SITE_FILE, MANAGED)
    assert merged["bip"] == "10.99.0.1/24"
    assert merged["metrics-addr"] == "127.0.0.1:9323"
    assert merged["live-restore"] is True
    # nested mappings merge key by key: the admin's label stays, the size is the role's
    assert merged["log-opts"] == {"max-size": "100m", "max-file": "5", "labels": "team"}


def test_later_layers_win_and_lists_are_replaced_whole():
    merged = merge_daemon_json(
        {"registry-mirrors": ["https://old.example"]},
        {"registry-mirrors": ["https://a.example"]},
        {"registry-mirrors": ["https://b.example", "https://c.example"]},
    )
    assert merged["registry-mirrors"] == ["https://b.example", "https://c.example"]


def test_none_removes_a_key_at_any_depth():
    merged = merge_daemon_json(SITE_FILE, {"bip": None, "log-opts": {"labels": None}})
    assert "bip" not in merged
    assert merged["log-opts"] == {"max-size": "10m"}


def test_a_mapping_replaces_a_scalar():
    merged = merge_daemon_json({"runtimes": "broken"}, {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}})
    assert merged["runtimes"] == {"nvidia": {"path": "nvidia-container-runtime"}}


def test_merge_never_mutates_its_inputs():
    current = {"log-opts": {"max-size": "10m"}}
    layer = {"log-opts": {"max-file": "3"}, "exec-opts": ["native.cgroupdriver=systemd"]}
    merged = merge_daemon_json(current, layer)
    merged["log-opts"]["max-size"] = "1k"
    merged["exec-opts"].append("x")
    assert current == {"log-opts": {"max-size": "10m"}}
    assert layer["exec-opts"] == ["native.cgroupdriver=systemd"]


def test_merging_the_same_layers_again_is_a_fixed_point():
    once = merge_daemon_json(SITE_FILE, MANAGED, {"runtimes": {"nvidia": {"path": "x"}}})
    twice = merge_daemon_json(render_daemon_json(once), MANAGED, {"runtimes": {"nvidia": {"path": "x"}}})
    assert render_daemon_json(once) == render_daemon_json(twice)


def test_fragments_apply_in_name_order():
    layers = ordered_fragments({"zz_site": {"default-runtime": "runc"}, "nvidia": {"default-runtime": "nvidia"}})
    assert merge_daemon_json({}, *layers)["default-runtime"] == "runc"


@pytest.mark.parametrize(
    ("fragments", "message"),
    [
        ("text", "fragments must be a mapping"),
        ({"nvidia": ["runtimes"]}, "fragment 'nvidia' must be a mapping"),
    ],
)
def test_bad_fragments_name_the_culprit(fragments, message):
    with pytest.raises(DaemonJsonError, match=message):
        ordered_fragments(fragments)


def test_non_mapping_layer_is_refused():
    with pytest.raises(DaemonJsonError, match="layer 0 must be a mapping, found str"):
        merge_daemon_json({}, "live-restore")


def test_render_is_stable_sorted_json_with_final_newline():
    text = render_daemon_json({"b": 1, "a": {"d": 2, "c": 3}})
    assert text == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'
