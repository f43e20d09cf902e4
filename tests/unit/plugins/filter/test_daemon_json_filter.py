import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.filter.daemon_json import FilterModule

FILTERS = FilterModule().filters()


def test_filter_merges_managed_options_and_fragments_over_the_file():
    merged = FILTERS["daemon_json_merge"](
        '{"bip": "10.0.0.1/24", "live-restore": false}',
        {"live-restore": True},
        {"debug": True},
        {"nvidia": {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}},
    )
    assert merged == {
        "bip": "10.0.0.1/24",
        "live-restore": True,
        "debug": True,
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
    }


def test_filter_turns_bad_input_into_a_filter_error():
    with pytest.raises(AnsibleFilterError, match="not valid JSON"):
        FILTERS["daemon_json_merge"]("{oops", {})
