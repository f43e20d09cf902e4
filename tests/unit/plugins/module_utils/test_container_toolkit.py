import pytest
from ansible_collections.gpufleet.node.plugins.module_utils._container_toolkit import (
    ToolkitPinError,
    check_pin,
    parse_packages_index,
)


def paragraph(name, version, depends=""):
    text = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
    if depends:
        text += f"Depends: {depends}\n"
    return text + "Description: NVIDIA container runtime\n multi-line description\n"


def index(*pairs):
    return "\n".join(paragraph(name, version) for name, version in pairs)


FULL_1_18 = [("nvidia-container-toolkit", "1.18.0-1"), ("nvidia-container-toolkit-base", "1.18.0-1"),
             ("libnvidia-container-tools", "1.18.0-1"), ("libnvidia-container1", "1.18.0-1")]
FULL_1_17 = [(name, "1.17.8-1") for name, _ in FULL_1_18]


def test_parse_packages_index_collects_every_version():
    parsed = parse_packages_index(index(*FULL_1_18, *FULL_1_17, ("libnvidia-container-dev", "1.18.0-1")))
    assert parsed["nvidia-container-toolkit"] == ["1.17.8-1", "1.18.0-1"]
    assert parsed["libnvidia-container-dev"] == ["1.18.0-1"]


@pytest.mark.parametrize("version", ["1.18.0-1", "1.17.8-1"])
def test_pin_served_for_all_four_is_accepted(version):
    assert check_pin(version, index(*FULL_1_18, *FULL_1_17)) == version


@pytest.mark.parametrize("version", ["1.18.0", "latest", "", "1.18", "v1.18.0-1"])
def test_malformed_pin_is_refused(version):
    with pytest.raises(ToolkitPinError, match="nvidia_container_toolkit_version must be a full package version"):
        check_pin(version)


def test_pin_missing_from_the_mirror_names_what_it_offers():
    with pytest.raises(ToolkitPinError, match=r"1\.18\.1-1 is not in http://mirror/ for nvidia-container-toolkit, "
                                              r".*offers all four at: 1\.17\.8-1, 1\.18\.0-1"):
        check_pin("1.18.1-1", index(*FULL_1_18, *FULL_1_17), "http://mirror/")


def test_pin_where_one_package_lags_is_refused():
    partial = [pair for pair in FULL_1_18 if pair[0] != "libnvidia-container1"] + [("libnvidia-container1", "1.17.8-1")]
    with pytest.raises(ToolkitPinError, match="for libnvidia-container1; the four packages must match exactly"):
        check_pin("1.18.0-1", index(*partial))
