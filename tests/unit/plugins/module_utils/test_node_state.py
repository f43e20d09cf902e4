"""The node_state comparisons: a task may be skipped only on an exact match of its end state."""

import base64
import hashlib
import os
import re

import pytest
from ansible_collections.gpufleet.node.plugins.module_utils import _node_state as ns

DPKG_OUT = (
    "docker.io\t20.10.24+dfsg1-1+deb12u1\thold ok installed\n"
    "containerd\t1.6.20~ds1-1+b1\tinstall ok installed\n"
    "docker-ce\t5:28.5.2-1~debian.12~bookworm\tinstall ok installed\n"
    "runc\t1.1.5+ds1-1+deb12u1\tdeinstall ok config-files\n"
    "garbage line\n"
)


SALT = "00112233445566778899aabbccddeeff"


def probe_with(files=None, packages=DPKG_OUT, units=None, manager="dpkg", salt=SALT):
    return {
        "package_manager": manager,
        "packages": ns.parse_dpkg_query(packages),
        "checksum_salt": salt,
        "files": files or {},
        "units": units or {},
    }


def test_dpkg_output_gives_versions_install_state_and_holds():
    pkgs = ns.parse_dpkg_query(DPKG_OUT)
    assert set(pkgs) == {"docker.io", "containerd", "docker-ce", "runc"}
    assert pkgs["docker.io"] == {"version": "20.10.24+dfsg1-1+deb12u1", "installed": True, "held": True,
                                 "status": "hold ok installed"}
    assert pkgs["runc"]["installed"] is False and pkgs["containerd"]["held"] is False


@pytest.mark.parametrize(("specs", "ok"), [
    (["docker.io"], True),
    (["docker.io=20.10.24+dfsg1-1+deb12u1", "containerd"], True),
    (["docker-ce=5:28.5.2-1~debian.12~bookworm"], True),
    (["docker-ce=28.5.2-1~debian.12~bookworm"], False),  # the epoch is part of the version
    (["docker.io=20.10.24+dfsg1-1+deb12u2"], False),
    (["docker.io=20.10.24*"], True),
    (["docker.io=20.10.25*"], False),
    (["runc"], False),  # config files left, not installed
    (["docker-compose"], False),  # unknown to dpkg
    (["docker.io>=20"], False),  # a spec form the guard does not read: the task decides
    ([], True),
])
def test_packages_ok_matches_apt_specs_exactly(specs, ok):
    assert ns.packages_ok(probe_with(), specs) is ok


def test_packages_never_ok_without_dpkg():
    assert ns.packages_ok(probe_with(manager="rpm"), ["docker.io"]) is False
    assert ns.packages_not_held(probe_with(manager=None), ["a", "b", "a"]) == ["a", "b"]


def test_not_held_and_installed_subsets():
    probe = probe_with()
    assert ns.packages_not_held(probe, ["docker.io", "containerd", "runc", "nope"]) == ["containerd", "runc", "nope"]
    assert ns.packages_installed(probe, ["runc", "docker.io", "containerd", "nope"]) == ["containerd", "docker.io"]


def entry(content=b"x", mode="0644", owner="root", group="root", **kw):
    base = {"exists": True, "isdir": False, "isreg": True, "islnk": False, "mode": mode, "owner": owner,
            "group": group, "checksum": hashlib.sha256(bytes.fromhex(SALT) + content).hexdigest()}
    base.update(kw)
    return base


def test_file_ok_needs_content_mode_owner_and_group_to_match():
    probe = probe_with(files={"/f": entry(b"{\n}\n")})
    assert ns.file_ok(probe, "/f", content="{\n}\n", mode="0644", owner="root", group="root")
    assert ns.file_ok(probe, "/f", content="{\n}\n", mode="644")
    assert not ns.file_ok(probe, "/f", content="{\n} \n")
    assert not ns.file_ok(probe, "/f", content="{\n}\n", mode="0640")
    assert not ns.file_ok(probe, "/f", mode="u=rw,g=r,o=r")  # symbolic modes are never compared as equal
    assert not ns.file_ok(probe, "/f", owner="jupyter")
    assert not ns.file_ok(probe, "/f", group="docker")
    assert not ns.file_ok(probe, "/f", state="directory")
    assert not ns.file_ok(probe, "/other")  # not probed: the task runs


def test_file_ok_compares_content_only_through_the_probes_salt():
    probe = probe_with(files={"/f": entry(b"token\n")})
    assert ns.file_ok(probe, "/f", content="token\n")
    assert ns.file_ok(probe, "/f", content=b"token\n")
    # Another salt, no salt or a nonsense salt: the content cannot be compared, the task runs.
    assert not ns.file_ok({**probe, "checksum_salt": "ff" * 16}, "/f", content="token\n")
    assert not ns.file_ok({k: v for k, v in probe.items() if k != "checksum_salt"}, "/f", content="token\n")
    assert not ns.file_ok({**probe, "checksum_salt": "not hex"}, "/f", content="token\n")
    # An unsalted hash (what the probe returned before) never matches.
    unsalted = probe_with(files={"/f": {**entry(), "checksum": hashlib.sha1(b"token\n").hexdigest()}})
    assert not ns.file_ok(unsalted, "/f", content="token\n")
    # Without content, mode and owner are still compared without the salt.
    assert ns.file_ok({k: v for k, v in probe.items() if k != "checksum_salt"}, "/f", mode="0644")


def test_numeric_owner_and_group_compare_with_uid_and_gid():
    probe = probe_with(files={"/w": entry(isdir=True, isreg=False, owner=None, group="users", uid=1000, gid=100)})
    assert ns.file_ok(probe, "/w", state="directory", owner=1000, group=100)
    assert ns.file_ok(probe, "/w", state="directory", owner="1000", group="users")
    assert not ns.file_ok(probe, "/w", state="directory", owner=0)
    assert not ns.file_ok(probe, "/w", state="directory", group="1000")


def test_file_ok_directories_absence_and_links():
    probe = probe_with(files={
        "/d": entry(isdir=True, isreg=False, mode="0755"),
        "/gone": {"exists": False},
        "/link": entry(islnk=True, isreg=False),
    })
    assert ns.file_ok(probe, "/d", state="directory", mode="0755", owner="root")
    assert not ns.file_ok(probe, "/d", state="file")
    assert ns.file_ok(probe, "/gone", state="absent")
    assert not ns.file_ok(probe, "/d", state="absent")
    assert not ns.file_ok(probe, "/gone", state="directory")
    assert not ns.file_ok(probe, "/link", state="file")
    assert not ns.file_ok(probe, "/d", state="link")


def test_file_content_reads_what_the_probe_returned():
    data = '{"live-restore": true}\n'
    probe = probe_with(files={
        "/etc/docker/daemon.json": {**entry(data.encode()), "content": base64.b64encode(data.encode()).decode()},
        "/absent": {"exists": False},
        "/unread": entry(),
        "/latin1": {**entry(b"\xff"), "content": base64.b64encode(b"\xff").decode()},
    })
    assert ns.file_content(probe, "/etc/docker/daemon.json") == data
    assert ns.file_content(probe, "/absent") == ""
    with pytest.raises(ValueError, match="did not read its content"):
        ns.file_content(probe, "/unread")
    with pytest.raises(ValueError, match="not UTF-8"):
        ns.file_content(probe, "/latin1")


SYSTEMCTL_OUT = (
    "Id=docker.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
    "Id=gpufleet-jupyter.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\n\n"
    "Id=nope.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n"
)


def test_units_from_one_systemctl_show_call():
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, SYSTEMCTL_OUT, ""

    units = ns.probe_units(run, ["docker.service", "gpufleet-jupyter.service", "nope.service"])
    assert len(calls) == 1
    probe = {"units": units}
    assert ns.unit_ok(probe, "docker.service", enabled=True, started=True)
    assert not ns.unit_ok(probe, "docker.service", enabled=False)
    assert ns.unit_ok(probe, "gpufleet-jupyter.service", enabled=False, started=False)
    assert not ns.unit_ok(probe, "gpufleet-jupyter.service", started=True)
    assert not ns.unit_ok(probe, "nope.service", started=False)  # not loaded: the task decides
    assert not ns.unit_ok(probe, "unprobed.service")


def test_no_systemd_means_no_unit_is_ok():
    assert ns.probe_units(lambda argv: (1, "", "System has not been booted with systemd"), ["docker.service"]) == {}
    assert ns.probe_units(lambda argv: (None, "", ""), ["docker.service"]) == {}


def test_probe_packages_tolerates_unknown_names_and_fails_on_errors():
    manager, pkgs = ns.probe_packages(lambda argv: (1, DPKG_OUT, "no packages found matching nope"),
                                      ["docker.io", "nope"])
    assert manager == "dpkg" and "nope" not in pkgs
    with pytest.raises(RuntimeError, match="dpkg-query failed"):
        ns.probe_packages(lambda argv: (2, "", "database locked"), ["docker.io"])


def test_probe_packages_falls_back_to_rpm_then_nothing():
    def rpm_only(argv):
        if argv[0] == "dpkg-query":
            return None, "", ""
        return 1, "docker-ce\t28.5.2-1.el9\tinstall ok installed\npackage podman-docker is not installed\n", ""

    manager, pkgs = ns.probe_packages(rpm_only, ["docker-ce", "podman-docker"])
    assert manager == "rpm" and set(pkgs) == {"docker-ce"}
    assert ns.probe_packages(lambda argv: (None, "", ""), ["x"]) == (None, {})


def test_stat_path_on_real_files(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text("{}\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    got = ns.stat_path(str(target), SALT, read=True)
    assert got["isreg"] and got["mode"] == "0640"
    assert got["checksum"] == hashlib.sha256(bytes.fromhex(SALT) + b"{}\n").hexdigest()
    assert base64.b64decode(got["content"]) == b"{}\n"
    assert "content" not in ns.stat_path(str(target), SALT)
    linked = ns.stat_path(str(link), SALT, read=True)
    assert linked["islnk"] and base64.b64decode(linked["content"]) == b"{}\n"
    assert "checksum" not in linked
    assert ns.stat_path(str(tmp_path / "none"), SALT) == {"exists": False}
    assert ns.stat_path(str(tmp_path), SALT)["isdir"]


def test_stat_path_never_returns_an_unsalted_hash(tmp_path):
    secret = tmp_path / "token"
    data = b"s3cr3t-jupyter-token\n"
    secret.write_bytes(data)
    salts = {ns.new_salt() for _call in range(3)}
    assert len(salts) == 3 and all(re.fullmatch("[0-9a-f]{32}", salt) for salt in salts)
    checksums = {ns.stat_path(str(secret), salt, read=read)["checksum"] for salt in salts for read in (False, True)}
    assert len(checksums) == 3  # one per salt, the same whether the content was read or streamed
    plain = {hashlib.new(name, data).hexdigest() for name in ("md5", "sha1", "sha224", "sha256", "sha512")}
    assert not checksums & plain


def test_big_files_are_streamed_with_the_same_salted_checksum(tmp_path):
    big = tmp_path / "big.bin"
    data = os.urandom(ns.READ_LIMIT + 3 * (1 << 20) + 17)
    big.write_bytes(data)
    got = ns.stat_path(str(big), SALT, read=True)
    assert "content" not in got  # over the read limit
    assert got["checksum"] == hashlib.sha256(bytes.fromhex(SALT) + data).hexdigest()
    assert ns.file_ok({"checksum_salt": SALT, "files": {"/big": got}}, "/big", content=data)
