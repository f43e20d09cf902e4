"""gpu_verify_images: which image each service and the probe run, and whether a workbench image
built FROM the pin (pytorch_image_source `build`) really carries the pinned base's layers."""

import pytest
from ansible_collections.gpufleet.node.plugins.filter.gpu_verify import FilterModule
from ansible_collections.gpufleet.node.plugins.module_utils._torch_report import compare

FILTERS = FilterModule().filters()
DIGEST = "sha256:" + "a" * 64
BASE_REF = f"reg.example/pytorch/pytorch@{DIGEST}"
BASE = {"Id": "sha256:" + "1" * 64, "RepoDigests": [BASE_REF], "RepoTags": [],
        "RootFS": {"Layers": ["sha256:l1", "sha256:l2"]}, "Config": {"Labels": None}}


def built(layers, label=BASE_REF):
    return {"Id": "sha256:" + "2" * 64, "RepoTags": ["reg.example/pytorch/pytorch-workbench:t-workbench-abc"],
            "RepoDigests": ["reg.example/pytorch/pytorch-workbench@sha256:" + "3" * 64],
            "RootFS": {"Layers": layers}, "Config": {"Labels": {"org.gpufleet.base": label}}}


def running(image_id):
    return [{"item": "gpufleet-jupyter", "exists": True, "container": {"Image": image_id}}]


def images_of(image, bases=(BASE,)):
    return FILTERS["gpu_verify_images"](running(image["Id"]), [image], image["Id"], list(bases))


@pytest.mark.parametrize(("image", "base", "from_base"), [
    (built(["sha256:l1", "sha256:l2", "sha256:l3"]), BASE, True),
    # labelled with the pin, but its layers are not the base's: a label proves nothing
    (built(["sha256:x1", "sha256:l2", "sha256:l3"]), BASE, False),
    # the base is not on the host: nothing to compare the layers with
    (built(["sha256:l1", "sha256:l2", "sha256:l3"]), None, False),
])
def test_a_built_image_is_from_the_pin_only_when_it_carries_the_bases_layers(image, base, from_base):
    found = images_of(image, [base] if base else [])
    assert set(found) == {"gpufleet-jupyter", "probe"}
    assert found["probe"]["base"] == BASE_REF
    assert found["probe"]["from_base"] is from_base


def test_base_refs_are_the_labels_of_built_images():
    assert FILTERS["gpu_verify_base_refs"]([built([]), built([]), BASE, built([], label="not-a-digest")]) == [BASE_REF]


def test_verify_passes_a_workbench_built_from_the_locked_digest_and_fails_one_from_another():
    lock = {"image_digest": DIGEST}
    good = compare({}, {"images": images_of(built(["sha256:l1", "sha256:l2", "sha256:l3"]))}, lock,
                   require_gpu=False)
    image_checks = [f for f in good if f["check"].startswith("image (")]
    assert image_checks and all(f["passed"] for f in image_checks)
    assert all(f["measured"] == DIGEST and f["note"].startswith("built FROM it") for f in image_checks)

    forged = compare({}, {"images": images_of(built(["sha256:x1", "sha256:l3"]))}, lock, require_gpu=False)
    assert [f["passed"] for f in forged if f["check"].startswith("image (")] == [False, False]

    other_lock = {"image_digest": "sha256:" + "b" * 64}
    other = compare({}, {"images": images_of(built(["sha256:l1", "sha256:l2"]))}, other_lock, require_gpu=False)
    assert not any(f["passed"] for f in other if f["check"].startswith("image ("))
