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
FULL_1_17 = [(name, "1.17.8-1") for name, _version in FULL_1_18]


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


# --- GPU hand-over by engine ------------------------------------------------------------------
from ansible_collections.gpufleet.node.plugins.module_utils._container_toolkit import (  # noqa: E402
    docker_cdi_capable,
    gpu_handover_problems,
    planned_docker_version,
    resolve_nvml_fix,
)


@pytest.mark.parametrize(("version", "capable"), [
    ("20.10.24", False), ("24.0.7", False), ("25.0.0", True), ("26.1.5", True), ("28.5.2", True),
    ("5:28.5.2-1~debian.12~bookworm", True), ("20.10.24+dfsg1-1+deb12u1", False), (None, None), ("", None),
    ("latest", None),
])
def test_cdi_needs_docker_25(version, capable):
    assert docker_cdi_capable(version) is capable


@pytest.mark.parametrize(("requested", "version", "resolved"), [
    ("auto", "20.10.24", "dev_char_symlinks"),     # Debian 12's docker.io
    ("auto", "26.1.5", "cdi"),                     # Debian 13's docker.io
    ("auto", None, "dev_char_symlinks"),           # not installed yet: the hook works on any engine
    ("cdi", "20.10.24", "cdi"),                    # explicit choices are kept (refused by the problems check)
    ("dev_char_symlinks", "28.5.2", "dev_char_symlinks"),
    ("none", "28.5.2", "none"),
])
def test_auto_follows_the_engine(requested, version, resolved):
    assert resolve_nvml_fix(requested, version) == resolved


def test_an_unknown_fix_names_the_variable():
    with pytest.raises(ToolkitPinError, match="nvidia_container_toolkit_nvml_fix must be one of"):
        resolve_nvml_fix("udev", "28.5.2")


@pytest.mark.parametrize(("args", "planned"), [
    (("docker_repo", "28.5.2", "", "Debian", "12"), "28.5.2"),
    (("distro", "28.5.2", "", "Debian", "12"), "20.10.24"),
    (("distro", "", "", "Debian", "13"), "26.1.5"),
    (("distro", "", "20.10.24+dfsg1-1+deb12u1", "Debian", "12"), "20.10.24"),
    (("distro", "", "", "Ubuntu", "24"), ""),      # unknown here: read from the node once installed
])
def test_planned_docker_version(args, planned):
    assert planned_docker_version(*args) == planned


def test_cdi_on_an_old_engine_is_a_problem_naming_the_variables():
    problems = gpu_handover_problems("cdi", "20.10.24", "docker_install_method=distro on Debian 12 installs")
    assert len(problems) == 1
    assert "nvidia_container_toolkit_nvml_fix=cdi" in problems[0]
    assert "Docker 20.10.24" in problems[0] and "docker_install_method=docker_repo" in problems[0]


@pytest.mark.parametrize(("requested", "version"), [
    ("cdi", "25.0.3"), ("cdi", None), ("auto", "20.10.24"), ("dev_char_symlinks", "20.10.24"), ("none", "1.0"),
])
def test_workable_or_unknown_combinations_are_no_problem(requested, version):
    assert gpu_handover_problems(requested, version, "node runs") == []
