# Copyright: gpufleet.node contributors
# Apache License 2.0 (see galaxy.yml)
"""The torch probe: a self-contained script that needs only torch and the standard library.

The module torch_gpu_facts feeds this file's source to a Python inside the pinned image
(`docker run --rm -i IMAGE python3 - ARGS`) or on the host. It never touches GPU clocks, power,
MIG or persistence settings: it reads versions and device properties, multiplies matrices,
copies memory and runs one NCCL all-reduce. It prints one JSON object on stdout; every check
catches its own errors, so a broken check is reported, not a stack trace.

Run by hand: `python3 _torch_probe.py '{"benchmark": true}'`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time

PROBE_VERSION = 3
# Relative error (Frobenius norm) of a 512x512x512 product against a float64 CPU reference.
# float32 allows for TF32 where a site enables it; the 16-bit bounds follow their mantissas.
TOLERANCE = {"float32": 2e-3, "bfloat16": 2e-2, "float16": 5e-3}
MATMUL_SIZE = 512
BENCH_SIZE = 8192
BENCH_REPEATS = 10
COPY_BYTES = 1 << 30
# The numerical fingerprint: a fixed seed, a small conv + MLP, a few SGD steps.
FINGERPRINT_SEED = 20261201
FINGERPRINT_STEPS = 3
FINGERPRINT_DTYPES = ("float32", "bfloat16")


def _timed(torch, fn, repeats, warmup=3):
    """Median seconds of fn() on the current CUDA device, timed with device events."""
    for _step in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _step in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return statistics.median(times)


def driver_version():
    """The NVIDIA kernel driver version as the container sees it ('' when there is none)."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as handle:
            found = re.search(r"Kernel Module(?: for [A-Za-z0-9_]+)?\s+([0-9][0-9.]+)", handle.read())
            if found:
                return found.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
        return out.splitlines()[0].strip() if out.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def check_matmul(torch, device, dtype_name):
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(1234)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    a_low, b_low = a.to(dtype), b.to(dtype)
    reference = a_low.double() @ b_low.double()   # the same rounded inputs, exact-ish product
    out = (a_low.to(device) @ b_low.to(device)).double().cpu()
    error = float(torch.linalg.norm(out - reference) / torch.linalg.norm(reference))
    bound = TOLERANCE[dtype_name]
    return {"passed": error <= bound, "value": error, "bound": bound, "unit": "relative error", "device": str(device)}


def bench_matmul(torch, index, dtype_name):
    dtype = getattr(torch, dtype_name)
    with torch.cuda.device(index):
        a = torch.randn(BENCH_SIZE, BENCH_SIZE, device="cuda", dtype=dtype)
        b = torch.randn(BENCH_SIZE, BENCH_SIZE, device="cuda", dtype=dtype)
        seconds = _timed(torch, lambda: torch.matmul(a, b), BENCH_REPEATS)
    return {"passed": True, "value": 2 * BENCH_SIZE**3 / seconds / 1e12, "unit": "TFLOP/s", "device": index}


def bench_copy(torch, index):
    """Device-to-device copy; bytes read plus bytes written per second, as memory bandwidth is quoted."""
    with torch.cuda.device(index):
        src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        seconds = _timed(torch, lambda: dst.copy_(src), BENCH_REPEATS)
    return {"passed": True, "value": 2 * COPY_BYTES / seconds / 1e12, "unit": "TB/s", "device": index}


def check_peer_access(torch, count):
    pairs = {f"{i}->{j}": bool(torch.cuda.can_device_access_peer(i, j))
             for i in range(count) for j in range(count) if i != j}
    return {"passed": all(pairs.values()), "value": pairs, "unit": "peer access"}


def check_all_reduce(torch, count):
    """One NCCL all-reduce over every local GPU (single process), checked and timed."""
    from torch.cuda import nccl  # noqa: PLC0415 - only where CUDA exists

    elements = 64 * 1024 * 1024  # 256 MB of float32 per GPU
    tensors = [torch.full((elements,), float(i + 1), device=f"cuda:{i}") for i in range(count)]
    nccl.all_reduce(tensors)   # warm-up, and the value that is checked
    for i in range(count):
        torch.cuda.synchronize(i)
    expected = count * (count + 1) / 2
    correct = all(float(t[0]) == expected and float(t[-1]) == expected for t in tensors)
    start = time.perf_counter()
    nccl.all_reduce(tensors)
    for i in range(count):
        torch.cuda.synchronize(i)
    seconds = time.perf_counter() - start
    # bus bandwidth as nccl-tests report it for all-reduce: size * 2 * (n-1) / n / time
    busbw = elements * 4 * 2 * (count - 1) / count / seconds / 1e9
    return {"passed": correct, "value": busbw, "unit": "GB/s bus bandwidth"}


def _digest(torch, tensors):
    """SHA-256 of the exact bytes of the tensors, in order."""
    sha = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        sha.update(bytes(flat.view(torch.uint8).tolist()))
    return sha.hexdigest()


def fingerprint(torch, device, dtype_name):
    """What a training step computes here, bit for bit: a seeded conv + MLP built on the CPU
    (the same starting bits everywhere), moved to the device in the dtype, a few SGD steps on
    seeded data with deterministic algorithms; the SHA-256 of the parameters after each step."""
    dtype = getattr(torch, dtype_name)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(FINGERPRINT_SEED)
        gen = torch.Generator().manual_seed(FINGERPRINT_SEED)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(8 * 16 * 16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        inputs = torch.randn(32, 3, 16, 16, generator=gen)
        labels = torch.randint(0, 10, (32,), generator=gen)
        model = model.to(device=device, dtype=dtype)
        inputs, labels = inputs.to(device=device, dtype=dtype), labels.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        steps = []
        for _step in range(FINGERPRINT_STEPS):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs).float(), labels)
            loss.backward()
            optimizer.step()
            steps.append(_digest(torch, list(model.parameters())))
        return {"passed": True, "sha256": steps[-1], "steps": steps, "device": str(device)}
    finally:
        torch.use_deterministic_algorithms(False)


def cpu_model():
    """The CPU's model name: CPU results differ between instruction sets, as GPU results between models."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def run_check(result, name, fn, *args):
    try:
        result["checks"][name] = fn(*args)
    except Exception as exc:
        result["checks"][name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


def probe(options):
    started = time.monotonic()
    # cuBLAS is deterministic only with a fixed workspace, set before its first use (the fingerprint)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    result = {"probe_version": PROBE_VERSION, "python": sys.version.split()[0], "checks": {}, "errors": [],
              # what the GPU hand-over gave this container, whatever torch makes of it
              "device_nodes": sorted(glob.glob("/dev/nvidia[0-9]*"))}
    try:
        import torch  # noqa: PLC0415 - the probe reports a missing torch instead of crashing
    except Exception as exc:
        result["errors"].append(f"import torch failed: {type(exc).__name__}: {exc}")
        result["wall_time_s"] = round(time.monotonic() - started, 3)
        return result

    cuda = torch.cuda.is_available()
    result.update({
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        "nccl": "",
        "cuda_available": cuda,
        "device_count": torch.cuda.device_count() if cuda else 0,
        "driver_version": driver_version(),
        "devices": [],
    })
    if cuda:
        try:
            result["nccl"] = ".".join(str(part) for part in torch.cuda.nccl.version())
        except Exception as exc:
            result["errors"].append(f"NCCL version: {exc}")
        for index in range(result["device_count"]):
            props = torch.cuda.get_device_properties(index)
            result["devices"].append({
                "index": index, "name": props.name, "uuid": str(getattr(props, "uuid", "")),
                "compute_capability": f"{props.major}.{props.minor}",
                "total_memory": int(props.total_memory), "multiprocessors": int(props.multi_processor_count),
            })

    targets = [f"cuda:{i}" for i in range(result["device_count"])] or ["cpu"]
    for device in targets:
        for dtype_name in ("float32", "bfloat16", "float16"):
            if device == "cpu" and dtype_name == "float16":
                continue  # CPU half-precision matmul is slow and not what a GPU node is for
            run_check(result, f"matmul_{dtype_name}@{device}", check_matmul, torch, device, dtype_name)

    # one fingerprint per dtype on the first GPU (a node's GPUs are one model), else on the CPU
    kind = "cuda" if cuda else "cpu"
    dtypes = {}
    for dtype_name in FINGERPRINT_DTYPES:
        try:
            dtypes[dtype_name] = fingerprint(torch, "cuda:0" if cuda else "cpu", dtype_name)
        except Exception as exc:
            dtypes[dtype_name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    result["fingerprint"] = {"kind": kind, "model": result["devices"][0]["name"] if cuda else cpu_model(),
                             "dtypes": dtypes}

    if options.get("benchmark") and cuda:
        for index in range(result["device_count"]):
            run_check(result, f"tflops_bf16@cuda:{index}", bench_matmul, torch, index, "bfloat16")
            run_check(result, f"tflops_fp16@cuda:{index}", bench_matmul, torch, index, "float16")
            run_check(result, f"copy_bandwidth@cuda:{index}", bench_copy, torch, index)
            torch.cuda.empty_cache()
        if result["device_count"] > 1:
            run_check(result, "peer_access", check_peer_access, torch, result["device_count"])
            run_check(result, "nccl_all_reduce", check_all_reduce, torch, result["device_count"])

    result["wall_time_s"] = round(time.monotonic() - started, 3)
    return result


if __name__ == "__main__":
    sys.stdout.write(json.dumps(probe(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})) + "\n")
