import shlex

import pytest
from ansible_collections.gpufleet.node.plugins.module_utils._container_service import (
    ServiceSpecError,
    docker_run_argv,
    gpu_args,
    gpu_devices,
    systemd_quote,
    ulimit_args,
)

BASE = {"name": "gpufleet-jupyter", "image": "reg.example/pytorch@sha256:" + "a" * 64}


@pytest.mark.parametrize(("gpus", "count", "expected"), [
    ("all", 8, ["all"]),
    ("all", 0, []),              # no GPU on the host: the service runs without any
    ("none", 8, []),
    (0, 8, []),
    (2, 8, ["0", "1"]),
    ("3", 4, ["0", "1", "2"]),
    ([1, 3], 4, ["1", "3"]),
    (["GPU-5a1b2c3d-0000-1111-2222-333344445555"], 1, ["GPU-5a1b2c3d-0000-1111-2222-333344445555"]),
])
def test_gpu_devices(gpus, count, expected):
    assert gpu_devices(gpus, count) == expected


@pytest.mark.parametrize(("gpus", "count", "message"), [
    (9, 8, "asks for 9 GPU(s); the host has 8"),
    ([0, 4], 4, "GPU index 4; the host has 4"),
    (["gpu0"], 4, "GPU indexes or UUIDs"),
    ([1, 1], 4, "lists a GPU twice"),
    (True, 4, "must be all, none, a count"),
    ({"a": 1}, 4, "must be all, none, a count"),
])
def test_gpu_devices_refuses_what_the_host_cannot_give(gpus, count, message):
    with pytest.raises(ServiceSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gpu_devices(gpus, count)


@pytest.mark.parametrize(("devices", "cdi", "expected"), [
    ([], True, ["--env", "NVIDIA_VISIBLE_DEVICES=void"]),    # the image's NVIDIA_VISIBLE_DEVICES=all gets none
    ([], False, ["--env", "NVIDIA_VISIBLE_DEVICES=void"]),
    (["all"], True, ["--device", "nvidia.com/gpu=all"]),
    (["0", "1"], True, ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"]),
    (["all"], False, ["--runtime", "nvidia", "--gpus", "all"]),
    (["0", "1"], False, ["--runtime", "nvidia", "--gpus", '"device=0,1"']),
])
def test_gpu_args(devices, cdi, expected):
    assert gpu_args(devices, cdi) == expected


def test_ulimits_unlimited_and_soft_hard():
    assert ulimit_args({"stack": 67108864, "memlock": -1, "nofile": {"soft": 1024, "hard": 65536}}) == [
        "--ulimit", "memlock=-1:-1", "--ulimit", "nofile=1024:65536", "--ulimit", "stack=67108864:67108864"]


@pytest.mark.parametrize("ulimits", [{"memlock": "lots"}, {"memlock": -2}, {"Mem Lock": 1}, {"stack": True}])
def test_ulimits_refuse_nonsense(ulimits):
    with pytest.raises(ServiceSpecError, match="ulimits"):
        ulimit_args(ulimits)


def test_run_line_has_everything_and_never_privileged():
    argv = docker_run_argv({
        **BASE, "user": "1000:1000", "workdir": "/workspace", "cap_drop": ["ALL"], "shm_size": "16g",
        "ulimits": {"memlock": -1}, "memory": "64g", "cpus": 16, "gpus": 2,
        "publish": ["127.0.0.1:8888:8888"], "env": {"HOME": "/workspace"},
        "volumes": [{"host": "/srv/gpufleet/workspace", "container": "/workspace"},
                    {"host": "/etc/gpufleet/jupyter/token", "container": "/run/secrets/token", "read_only": True}],
        "command": ["jupyter", "lab", "--config=/etc/gpufleet/jupyter_server_config.py"],
    }, gpu_count=8, cdi=True)
    line = " ".join(argv)
    assert argv[:4] == ["/usr/bin/docker", "run", "--rm", "--name"]
    assert "--privileged" not in argv
    assert "--pull never --init" in line
    assert "--user 1000:1000" in line and "--workdir /workspace" in line
    assert "--security-opt no-new-privileges --cap-drop ALL" in line
    assert "--shm-size 16g --ulimit memlock=-1:-1 --memory 64g --cpus 16" in line
    assert "--device nvidia.com/gpu=0 --device nvidia.com/gpu=1" in line
    assert "--publish 127.0.0.1:8888:8888" in line
    assert "--volume /etc/gpufleet/jupyter/token:/run/secrets/token:ro" in line
    assert argv[-4:] == [BASE["image"], "jupyter", "lab", "--config=/etc/gpufleet/jupyter_server_config.py"]


def test_ipc_host_wins_over_shm_size():
    argv = docker_run_argv({**BASE, "ipc_host": True, "shm_size": "8g"}, gpu_count=0, cdi=True)
    assert ["--ipc", "host"] == argv[argv.index("--ipc"):argv.index("--ipc") + 2]
    assert "--shm-size" not in argv


@pytest.mark.parametrize("argv", [
    ["/usr/bin/docker", "run", "--gpus", '"device=0,1"', "img"],
    ["sh", "-c", "echo 100% $HOME 'quoted' \\ back"],
    ["plain", "--label", "gpufleet.service=x", "a@sha256:" + "b" * 64],
])
def test_systemd_quote_round_trips(argv):
    line = systemd_quote(argv)
    # systemd unescapes %% and $$ and splits like a shell on double quotes and backslashes
    unquoted = shlex.split(line.replace("%%", "%").replace("$$", "$"), posix=True)
    assert unquoted == argv
    assert "%%" in line or "%" not in "".join(argv)


def test_gpus_wait_for_a_loaded_driver_but_are_still_checked():
    spec = {**BASE, "gpus": 2}
    assert "--device" not in docker_run_argv(spec, gpu_count=8, cdi=True, gpus_ready=False)
    with pytest.raises(ServiceSpecError, match="the host has 1"):
        docker_run_argv(spec, gpu_count=1, cdi=True, gpus_ready=False)
