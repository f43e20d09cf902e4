#!/usr/bin/python
# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
module: torch_gpu_facts
short_description: Run a torch probe on the host, inside the pinned image or with a host Python, and return facts
version_added: 1.0.0
description:
  - Runs the collection's torch probe (C(plugins/module_utils/_torch_probe.py), torch and the standard library
    only) inside an image with C(docker run --rm -i) and the GPUs given, or with a Python interpreter of the host.
  - Returns everything under C(ansible_facts['torch_gpu']) - torch, CUDA, cuDNN and NCCL versions,
    C(cuda_available), the devices (index, name, UUID, compute capability, memory, multiprocessors), the driver
    version, and checks each with C(passed) and the measured value - a matrix product per dtype against a float64
    CPU reference and, with O(benchmark), bf16/fp16 TFLOP/s, device-to-device copy bandwidth, peer access and an
    NCCL all-reduce across the local GPUs.
  - Read-only - never reports a change, and never touches GPU clocks, power, MIG or persistence settings.
author:
  - gpufleet.node maintainers (!UNKNOWN)
options:
  image:
    description: Image to run the probe in (a digest reference or image ID). Exactly one of O(image) and O(python).
    type: str
  python:
    description: Python interpreter on the host to run the probe with.
    type: str
  devices:
    description:
      - GPUs handed to the container - V([]) none, V([all]), or GPU indexes/UUIDs (the filter
        C(gpufleet.node.container_service_gpus) resolves C(all), a count or a list against the host).
    type: list
    elements: str
    default: []
  gpu_cdi:
    description:
      - Hand GPUs over as CDI devices (C(--device nvidia.com/gpu=...)) instead of the nvidia runtime (C(--gpus)).
    type: bool
    default: true
  docker_args:
    description: More C(docker run) arguments, such as the service's C(--ipc host) or C(--shm-size 16g).
    type: list
    elements: str
    default: []
  benchmark:
    description: Also measure TFLOP/s, copy bandwidth, peer access and an NCCL all-reduce (GPUs only).
    type: bool
    default: false
  timeout:
    description: Seconds the probe may take before it is stopped and the module fails.
    type: int
    default: 300
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
"""

EXAMPLES = r"""
- name: Probe the pinned image with every GPU, benchmark included
  gpufleet.node.torch_gpu_facts:
    image: "{{ pytorch_image_ref }}"
    devices: [all]
    docker_args: [--ipc, host]
    benchmark: true

- name: Probe a host interpreter
  gpufleet.node.torch_gpu_facts:
    python: /opt/conda/bin/python3
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    torch_gpu:
      description: What the probe found; C(errors) lists what could not be read, C(checks) maps a check name to
        C(passed), C(value), C(unit) (and C(bound) or C(error)).
      type: dict
      returned: always
      sample:
        torch: 2.9.1+cu128
        cuda: "12.8"
        cudnn: "91002"
        nccl: 2.27.3
        cuda_available: true
        device_count: 1
        driver_version: 580.95.05
        devices: [{index: 0, name: NVIDIA H100 80GB HBM3, uuid: GPU-..., compute_capability: "9.0",
                   total_memory: 85029158912, multiprocessors: 132}]
        checks:
          matmul_bfloat16@cuda:0: {passed: true, value: 0.0021, bound: 0.02, unit: relative error}
          tflops_bf16@cuda:0: {passed: true, value: 745.2, unit: TFLOP/s}
        wall_time_s: 9.8
        runner: docker
        errors: []
"""

import inspect  # noqa: E402 -- imports follow the docs (module layout)
import json  # noqa: E402 -- as above
import os  # noqa: E402 -- as above
import subprocess  # noqa: E402 -- as above
import uuid  # noqa: E402 -- as above

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 -- as above
from ansible_collections.gpufleet.node.plugins.module_utils import _torch_probe  # noqa: E402 -- as above
from ansible_collections.gpufleet.node.plugins.module_utils._container_service import gpu_args  # noqa: E402 -- as above
from ansible_collections.gpufleet.node.plugins.module_utils._torch_report import parse_probe_output  # noqa: E402 -- as above


def probe_source() -> str:
    """The probe script as text (AnsiballZ carries module_utils in its zip)."""
    return inspect.getsource(_torch_probe)


def run_probe(module, argv, timeout, container=None):
    """Run the probe with a time limit; a probe container is removed when it overruns."""
    try:
        proc = subprocess.run(argv, input=probe_source(), capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        if container:
            subprocess.run([argv[0], "rm", "--force", container], capture_output=True, check=False)
        module.fail_json(msg=f"the torch probe did not finish within {timeout} s (option timeout)", cmd=argv)
    except OSError as exc:
        module.fail_json(msg=f"cannot run {argv[0]}: {exc}", cmd=argv)
    return proc.returncode, proc.stdout, proc.stderr


def main():
    module = AnsibleModule(
        argument_spec={
            "image": {"type": "str"},
            "python": {"type": "str"},
            "devices": {"type": "list", "elements": "str", "default": []},
            "gpu_cdi": {"type": "bool", "default": True},
            "docker_args": {"type": "list", "elements": "str", "default": []},
            "benchmark": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 300},
        },
        required_one_of=[("image", "python")],
        mutually_exclusive=[("image", "python")],
        supports_check_mode=True,
    )
    params = module.params
    options = json.dumps({"benchmark": params["benchmark"]})
    container = None
    if params["image"]:
        docker = module.get_bin_path("docker")
        if not docker:
            module.fail_json(msg="docker is not installed on this host; the probe runs inside the image with docker")
        container = f"gpufleet-probe-{uuid.uuid4().hex[:12]}"
        argv = [docker, "run", "--rm", "-i", "--name", container, "--pull", "never", "--network", "none",
                *gpu_args(params["devices"], params["gpu_cdi"]), *params["docker_args"],
                "--entrypoint", "python3", params["image"], "-", options]
        runner = "docker"
    else:
        argv = [params["python"], "-", options]
        runner = "python"

    rc, out, err = run_probe(module, argv, params["timeout"], container)
    try:
        facts = parse_probe_output(rc, out, err)
    except ValueError as exc:
        module.fail_json(msg=str(exc), rc=rc, stdout=out[-2000:], stderr=err[-2000:], cmd=argv)
    facts["runner"] = runner
    module.exit_json(changed=False, ansible_facts={"torch_gpu": facts})


if __name__ == "__main__":
    main()
