"""The pinned image on the two workbench nodes: wb1 pulls it by digest, wb2 (air-gapped) loads
an archive. Each re-run is of image.yml, the pytorch_image role alone (a wrong pin must leave the
running services alone, which this scenario's services show).

The image is the lab's STAND-IN for pytorch/pytorch (lab/standin/build-workbench-image.sh).
"""

import base64
import json
import os
import secrets

import pytest
import requests

DIGEST = os.environ.get("GPUFLEET_LAB_WORKBENCH_DIGEST", "")
IMAGE_ID = os.environ.get("GPUFLEET_LAB_WORKBENCH_ID", "")
ZERO = "sha256:" + "0" * 64
SERVICES = ("gpufleet-jupyter", "gpufleet-ssh")


def services_run_the_pin(host):
    """Both services active, their containers on the pinned image."""
    for unit in SERVICES:
        assert host.service(unit).is_running, unit
        assert host.check_output(f"docker inspect -f '{{{{.Image}}}}' {unit}") == IMAGE_ID, unit


@pytest.fixture
def airgapped(host):
    return "airgapped" in host.ansible.get_variables().get("group_names", [])


def on_this_node(playbook, host, extra):
    """Re-run the image role (image.yml) on this node only, with extra variables."""
    return playbook("image.yml", "--limit", host.backend.get_hostname(), "-e", json.dumps(extra))


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
    assert playbook("image.yml").clean
    run = playbook("image.yml", "--check", "--diff")
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
        services_run_the_pin(host)
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
    services_run_the_pin(host)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pytorch_image_digest": "sha256:1234"}, "pytorch_image_digest must be sha256: followed by 64 hex"),
        ({"pytorch_image_digest": "latest"}, "pytorch_image_digest must be sha256: followed by 64 hex"),
        ({"pytorch_image_repository": "pytorch/pytorch:latest"}, "pytorch_image_repository must be"),
        ({"pytorch_image_source": "git"}, "pytorch_image_source"),
        ({"pytorch_image_source": "build", "pytorch_image_build_jupyterlab_version": "latest"},
         "pytorch_image_build_jupyterlab_version must be a version"),
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


def forget_in_registry(lab_registry, name):
    """Delete every tag of a repository from the lab registry (a run before this one may have pushed)."""
    base = f"http://{lab_registry}/v2/{name}"
    tags = requests.get(f"{base}/tags/list", timeout=10)
    for tag in (tags.json().get("tags") or []) if tags.status_code == 200 else []:
        head = requests.head(f"{base}/manifests/{tag}", timeout=10, headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        digest = head.headers.get("Docker-Content-Digest")
        if digest:
            requests.delete(f"{base}/manifests/{digest}", timeout=10).raise_for_status()


def built_images(host, repository):
    out = host.check_output(f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {repository}")
    return [line for line in out.splitlines() if line]


def test_build_source_derives_a_labelled_workbench_image_from_the_pin(host, airgapped, playbook, lab_registry):
    """`build`: FROM the pinned base, labelled with the base and the Dockerfile's hash; built
    once and pushed, pulled (not rebuilt) where it is missing; never rebuilt for the same inputs.

    The lab's stand-in base already has JupyterLab 4.6.6 and sshd, so no package is downloaded.
    """
    if airgapped:
        pytest.skip("the registry node builds and pushes")
    repository = f"{lab_registry}/lab/pytorch-workbench-built"
    extra = {"pytorch_image_source": "build", "pytorch_image_build_repository": repository,
             "pytorch_image_build_push": True}
    host.run(f"docker images -q {repository} | xargs -r docker image rm -f")
    forget_in_registry(lab_registry, "lab/pytorch-workbench-built")

    first = on_this_node(playbook, host, extra)
    assert first.returncode == 0, first
    assert "TASK [gpufleet.node.pytorch_image : Build the workbench image]" in first.stdout, first
    [ref] = built_images(host, repository)
    built = image(host, ref)
    labels = built["Config"]["Labels"]
    assert labels["org.gpufleet.base"] == f"{lab_registry}/lab/pytorch-workbench@{DIGEST}"
    assert len(labels["org.gpufleet.build-inputs"]) == 64
    assert ref.endswith("-workbench-" + labels["org.gpufleet.build-inputs"][:12])
    assert built["Id"] != IMAGE_ID
    assert host.check_output(f"docker run --rm {built['Id']} jupyter lab --version") == "4.6.6"
    # pushed: the lab registry lists the tag
    tags = requests.get(f"http://{lab_registry}/v2/lab/pytorch-workbench-built/tags/list", timeout=10).json()["tags"]
    assert ref.rsplit(":", 1)[1] in tags

    again = on_this_node(playbook, host, extra)
    assert again.clean, again
    assert on_this_node(playbook, host, extra).clean

    # Another node (here: the same one, after losing the image) pulls what was pushed.
    host.check_output(f"docker image rm {ref}")
    pulled = on_this_node(playbook, host, extra)
    assert pulled.returncode == 0, pulled
    assert "Build the workbench image]" not in pulled.stdout, pulled
    assert image(host, ref)["Id"] == built["Id"]

    # A new input (another JupyterLab pin) is a new image, never a retag of the old one.
    changed = on_this_node(playbook, host, {**extra, "pytorch_image_build_push": False,
                                            "pytorch_image_build_pip_index_url": "http://127.0.0.1:9/simple"})
    assert changed.returncode == 0, changed
    assert len(built_images(host, repository)) == 2
    host.run(f"docker images -q {repository} | xargs -r docker image rm -f")
    forget_in_registry(lab_registry, "lab/pytorch-workbench-built")


def test_the_node_logs_in_for_the_pull_and_keeps_no_password(host, airgapped, playbook, lab_registry, tmp_path):
    """With registry credentials the node logs in for the pull and out again afterwards: root's
    ~/.docker/config.json keeps no entry for the registry and no trace of the password. The lab
    registry asks for no credentials and dockerd logs in to it all the same (STAND-IN for a site
    registry with accounts: a real one would also refuse a wrong password, which the lab cannot)."""
    if airgapped:
        pytest.skip("only the registry node")
    manifest = requests.head(f"http://{lab_registry}/v2/lab/busybox/manifests/1", timeout=10, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"})
    digest = manifest.headers["Docker-Content-Digest"]
    repository = f"{lab_registry}/lab/busybox"
    host.run(f"docker image rm {repository}@{digest}")
    password = "lab-" + secrets.token_hex(12)
    extra = tmp_path / "credentials.yml"   # from a file, as from Vault: -e on the command line is echoed at -vvvv
    extra.write_text(json.dumps({"pytorch_image_repository": repository, "pytorch_image_digest": digest,
                                 "pytorch_image_registry_username": "robot",
                                 "pytorch_image_registry_password": password}))
    args = ("image.yml", "--limit", host.backend.get_hostname(), "-e", f"@{extra}")
    run = playbook(*args)
    assert run.returncode == 0, run
    assert "changed: [" in run.task("gpufleet.node.pytorch_image : Log in to the registry"), run
    assert "changed: [" in run.task("gpufleet.node.pytorch_image : Log out of the registry"), run
    assert password not in run.stdout
    config = host.run("cat /root/.docker/config.json").stdout
    secret = base64.b64encode(f"robot:{password}".encode()).decode()
    assert password not in config and secret not in config, config
    assert lab_registry not in json.loads(config or "{}").get("auths", {}), config
    # The image is there now: nothing to log in for, nothing to log out of.
    assert playbook(*args).clean
