import hashlib
import re
import shlex

import pytest
from ansible_collections.gpufleet.node.plugins.module_utils._container_service import (
    ServiceSpecError,
    applied_record,
    docker_run_argv,
    gpu_args,
    gpu_devices,
    supervised_argv,
    systemd_environment,
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
    assert argv[:3] == ["/usr/bin/docker", "run", "--name"]
    assert "--rm" not in argv   # Docker < 25 removes --rm containers at a dockerd restart (moby#46308)
    assert "--privileged" not in argv
    assert "--pull never --init" in line
    assert "--user 1000:1000" in line and "--workdir /workspace" in line
    assert "--security-opt no-new-privileges --cap-drop ALL" in line
    assert "--shm-size 16g --ulimit memlock=-1:-1 --memory 64g --cpus 16" in line
    assert "--device nvidia.com/gpu=0 --device nvidia.com/gpu=1" in line
    assert "--publish 127.0.0.1:8888:8888" in line
    assert "--volume /etc/gpufleet/jupyter/token:/run/secrets/token:ro" in line
    assert argv[-4:] == [BASE["image"], "jupyter", "lab", "--config=/etc/gpufleet/jupyter_server_config.py"]


def test_the_runner_gets_the_run_line_labelled_with_its_own_id():
    argv = docker_run_argv({**BASE, "memory": "8g"}, gpu_count=0, cdi=True)
    line = supervised_argv(argv, "/usr/local/libexec/gpufleet/container-run")
    runner, action, name, run_id = line[:4]
    assert (runner, action, name) == ("/usr/local/libexec/gpufleet/container-run", "start", BASE["name"])
    assert line[4:] == [*argv[:argv.index(f"gpufleet.service={BASE['name']}") + 1],
                        "--label", f"gpufleet.run={run_id}", *argv[argv.index(f"gpufleet.service={BASE['name']}") + 1:]]
    assert line[4:7] == ["/usr/bin/docker", "run", "--name"]
    # The same settings give the same id (a kept container is followed); any change gives another.
    assert supervised_argv(list(argv), "/r")[3] == run_id
    other = docker_run_argv({**BASE, "memory": "16g"}, gpu_count=0, cdi=True)
    assert supervised_argv(other, "/r")[3] != run_id


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


CONTROL = ["a\nb", "a\rb", "a\tb", "a\0b", "a\x1bb", "a\x7fb", "end\n"]


@pytest.mark.parametrize("word", CONTROL)
def test_systemd_quote_refuses_control_characters(word):
    # A newline would end ExecStart= and start a directive of the caller's choosing.
    with pytest.raises(ValueError, match=re.escape(repr(word))):
        systemd_quote(["/usr/bin/docker", "run", "--env", word, "img"])


def test_systemd_quote_keeps_non_ascii_and_spaces():
    assert systemd_quote(["echo", "grüße welt"]) == 'echo "grüße welt"'


PROXIES = {
    "HTTP_PROXY": "http://proxy.example.internal:3128",
    "HTTPS_PROXY": "http://proxy.example.internal:3128",
    "NO_PROXY": "localhost,127.0.0.1,.example.internal",
}


def test_systemd_environment_writes_ordinary_values_as_the_drop_in_always_had():
    # Byte for byte what http-proxy.conf.j2's `{% for name, value in env | dictsort %}` loop wrote.
    assert systemd_environment(PROXIES) == (
        'Environment="HTTP_PROXY=http://proxy.example.internal:3128"\n'
        'Environment="HTTPS_PROXY=http://proxy.example.internal:3128"\n'
        'Environment="NO_PROXY=localhost,127.0.0.1,.example.internal"'
    )
    assert systemd_environment({}) == ""


@pytest.mark.parametrize(("value", "written"), [
    ('say "hi"', 'say \\"hi\\"'),
    ("C:\\dir\\", "C:\\\\dir\\\\"),
    ("100%", "100%%"),
    ("%h/%i", "%%h/%%i"),
    ("$HOME ${USER}", "$HOME ${USER}"),  # systemd does not expand $ in Environment=
    ("it's spaced  out", "it's spaced  out"),
    ("http://user:p%40ss@proxy:3128", "http://user:p%%40ss@proxy:3128"),
])
def test_systemd_environment_escapes_what_systemd_would_read(value, written):
    line = systemd_environment({"V": value})
    assert line == f'Environment="V={written}"'
    # systemd unquotes like a shell within double quotes (C escapes) and then expands %%.
    assert [word.replace("%%", "%") for word in shlex.split(line.partition("=")[2])] == [f"V={value}"]


@pytest.mark.parametrize("value", CONTROL)
def test_systemd_environment_refuses_control_characters(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        systemd_environment({"HTTP_PROXY": value})


@pytest.mark.parametrize("name", ["", "1PROXY", "HTTP-PROXY", "A B", "A=B", "A\nB", "PROXY\n", 'A"'])
def test_systemd_environment_refuses_bad_names(name):
    with pytest.raises(ValueError, match="environment variable name"):
        systemd_environment({name: "x"})


UNIT = "[Unit]\nDescription=gpufleet-jupyter\n[Service]\nExecStart=/usr/bin/docker run --rm img\n"
TOKEN = "6f1c0ffee-jupyter-token\n"
PARTS = [UNIT, "c.ServerApp.root_dir = '/workspace'\n", TOKEN, "550.54.15"]
V2 = re.compile(r"^v2 ([0-9a-f]{32}) ([0-9a-f]{64})$")


def old_record(parts):
    """How service.yml built `.applied` before: (unit ~ files | join('\\0') ~ driver) | hash('sha256'),
    with Ansible's doubling of backslashes in {{ }} making the separator backslash and zero."""
    return hashlib.sha256((parts[0] + "\\0".join(parts[1:-1]) + parts[-1]).encode()).hexdigest()


def test_applied_v2_record_of_the_same_parts_is_current_and_kept():
    first = applied_record("", PARTS)
    assert first["current"] is False and V2.match(first["record"])
    again = applied_record(first["record"], PARTS)
    assert again == {"record": first["record"], "current": True}  # same salt: nothing to write
    assert applied_record(first["record"] + "\n", PARTS)["current"] is True


@pytest.mark.parametrize("index", range(len(PARTS)))
def test_applied_any_changed_part_is_not_current(index):
    record = applied_record("", PARTS)["record"]
    changed = list(PARTS)
    changed[index] += "x"
    got = applied_record(record, changed)
    assert got["current"] is False
    assert got["record"] != record and got["record"].split()[1] == record.split()[1]  # salt kept


def test_applied_parts_cannot_trade_text_across_their_boundaries():
    record = applied_record("", ["unit", "ab", "c", "drv"])["record"]
    assert applied_record(record, ["unit", "a", "bc", "drv"])["current"] is False
    assert applied_record(record, ["unita", "b", "c", "drv"])["current"] is False


def test_applied_old_record_of_the_same_parts_is_current_and_rewritten():
    got = applied_record(old_record(PARTS), PARTS)
    assert got["current"] is True  # a node converged by the old role is not restarted on upgrade
    assert V2.match(got["record"])
    # ...and the next run finds the new record current and keeps it.
    assert applied_record(got["record"], PARTS) == {"record": got["record"], "current": True}


def test_applied_old_record_of_other_parts_is_not_current():
    changed = [*PARTS[:-1], "560.35.03"]
    got = applied_record(old_record(PARTS), changed)
    assert got["current"] is False and V2.match(got["record"])


@pytest.mark.parametrize("text", ["", "garbage", "v2 nothex " + "a" * 64, "v3 " + "a" * 32 + " " + "b" * 64,
                                  "A" * 64])
def test_applied_unknown_record_is_not_current(text):
    got = applied_record(text, PARTS)
    assert got["current"] is False and V2.match(got["record"])


def test_applied_fresh_salts_differ():
    first, second = applied_record("", PARTS), applied_record("", PARTS)
    assert first["record"].split()[1] != second["record"].split()[1]
    assert first["record"] != second["record"]


def test_applied_record_holds_no_plain_hash_of_any_part():
    record = applied_record("", PARTS)["record"]
    applied = applied_record(old_record(PARTS), PARTS)["record"]
    for part in [*PARTS, "".join(PARTS), "\0".join(PARTS)]:
        for name in ("sha1", "sha256"):
            digest = hashlib.new(name, part.encode()).hexdigest()
            assert digest not in record and digest not in applied
    assert old_record(PARTS) not in applied
    salt, digest = V2.match(record).groups()
    assert digest == hashlib.sha256(bytes.fromhex(salt) + "\0".join(PARTS).encode()).hexdigest()


def test_applied_needs_a_unit_and_a_driver():
    with pytest.raises(ValueError, match="parts must hold"):
        applied_record("", ["unit only"])
