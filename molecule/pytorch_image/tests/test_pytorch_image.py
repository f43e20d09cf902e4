"""The pinned image on two lab nodes: one pulls it by digest, one (air-gapped) loads an archive.

The image is the lab's STAND-IN for pytorch/pytorch (lab/standin/build-workbench-image.sh).
"""

import json
import os

import pytest

DIGEST = os.environ.get("GPUFLEET_LAB_WORKBENCH_DIGEST", "")
IMAGE_ID = os.environ.get("GPUFLEET_LAB_WORKBENCH_ID", "")
ZERO = "sha256:" + "0" * 64


@pytest.fixture
def airgapped(host):
    return "airgapped" in host.ansible.get_variables().get("group_names", [])


def on_this_node(playbook, host, extra):
    """Re-run converge on this node only, with extra variables."""
    return playbook("converge.yml", "--limit", host.backend.get_hostname(), "-e", json.dumps(extra))


def image(host, ref):
    result = host.run(f"docker image inspect {ref}")
    return json.loads(result.stdout)[0] if result.rc == 0 else None


def test_pinned_image_is_on_the_node(host, airgapped, lab_registry):
    if airgapped:
        found = image(host, IMAGE_ID)
        assert found is not None
        assert found["RepoDigests"] == []          # loaded from the archive, never pulled
    else:
        found = image(host, f"{lab_registry}/lab/pytorch-workbench@{DIGEST}")
        assert found is not None
        assert f"{lab_registry}/lab/pytorch-workbench@{DIGEST}" in found["RepoDigests"]
        assert found["Id"] == IMAGE_ID              # the same image both ways


def test_airgapped_node_cannot_reach_the_registry(host, airgapped, lab_registry):
    if not airgapped:
        pytest.skip("only the air-gapped node")
    settings = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert lab_registry not in settings.get("insecure-registries", [])
    assert host.run(f"docker pull {lab_registry}/lab/busybox:1").rc != 0


def test_image_runs_torch(host):
    out = host.check_output(f"docker run --rm {IMAGE_ID} python3 -c 'import torch; print(torch.__version__)'")
    assert out.startswith("2.13.0")


def test_converged_nodes_change_nothing_and_check_mode_agrees(playbook):
    assert playbook("converge.yml").clean
    run = playbook("converge.yml", "--check", "--diff")
    assert run.clean, run


def test_wrong_archive_fails_and_running_service_keeps_its_image(host, airgapped, playbook):
    if not airgapped:
        pytest.skip("only the air-gapped node")
    host.run("docker rm -f gpufleet-image-probe")
    host.check_output(f"docker run -d --name gpufleet-image-probe {IMAGE_ID} sleep 3600")
    try:
        run = on_this_node(playbook, host, {"pytorch_image_id": ZERO})
        assert run.returncode != 0
        assert f"did not get the pinned image {ZERO}" in run.stdout, run
        assert "the archive loaded" in run.stdout, run
        probe = json.loads(host.check_output("docker inspect gpufleet-image-probe"))[0]
        assert probe["State"]["Running"] is True
        assert probe["Image"] == IMAGE_ID
    finally:
        host.run("docker rm -f gpufleet-image-probe")
        host.run("rm -f /var/lib/gpufleet/images/" + "0" * 64 + ".tar")


def test_digest_the_registry_does_not_have_fails(host, airgapped, playbook):
    if airgapped:
        pytest.skip("only the registry node")
    run = on_this_node(playbook, host, {"pytorch_image_digest": ZERO})
    assert run.returncode != 0
    assert "manifest unknown" in run.stdout or "not found" in run.stdout, run
    assert run.unchanged, run
    assert image(host, IMAGE_ID) is not None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pytorch_image_digest": "sha256:1234"}, "pytorch_image_digest must be sha256: followed by 64 hex"),
        ({"pytorch_image_digest": "latest"}, "pytorch_image_digest must be sha256: followed by 64 hex"),
        ({"pytorch_image_repository": "pytorch/pytorch:latest"}, "pytorch_image_repository must be"),
        ({"pytorch_image_source": "build"}, "pytorch_image_source"),
    ],
)
def test_bad_pin_fails_before_any_change(host, airgapped, playbook, extra, message):
    if airgapped:
        pytest.skip("checked once, on the registry node")
    before = host.check_output("docker images -q --no-trunc | sort | md5sum")
    run = on_this_node(playbook, host, extra)
    assert run.returncode != 0
    assert message in run.stdout, run
    assert run.unchanged, run
    assert host.check_output("docker images -q --no-trunc | sort | md5sum") == before
