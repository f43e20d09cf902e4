"""Bench of the torch probe's numerical fingerprint: how long it takes, against its 5 s goal.

Runs the probe's own fingerprint() (plugins/module_utils/_torch_probe.py) with the torch of the
Python that runs this script, on the first GPU or the CPU, REPEAT times (default 3), and prints
the fastest and slowest total of both dtypes and whether every run gave the same bits. A bench,
not a test: it marks the figure ok/over and exits non-zero only when it cannot measure.

    .venv/bin/python bench/fingerprint.py [REPEAT]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "module_utils"))

import _torch_probe as probe

GOAL_S = 5.0


def main() -> int:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    try:
        import torch  # noqa: PLC0415 - reported, not crashed on
    except ImportError as exc:
        print(f"cannot measure: {exc}")
        return 2
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    totals, shas = [], set()
    for _run in range(repeat):
        start = time.monotonic()
        run = {dtype: probe.fingerprint(torch, device, dtype)["sha256"] for dtype in probe.FINGERPRINT_DTYPES}
        totals.append(time.monotonic() - start)
        shas.add(tuple(sorted(run.items())))
    fastest, slowest = min(totals), max(totals)
    print(f"fingerprint on {device} (torch {torch.__version__}), {repeat} runs of "
          f"{', '.join(probe.FINGERPRINT_DTYPES)}: fastest {fastest:.2f} s, slowest {slowest:.2f} s, "
          f"goal < {GOAL_S:.0f} s: {'ok' if slowest < GOAL_S else 'over'}; "
          f"{'the same bits every run' if len(shas) == 1 else f'{len(shas)} different results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
