"""Wall time and peak resident memory of a command, its child processes included."""
from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass

import psutil

SAMPLE_SECONDS = 0.02


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mb: float


def measure(cmd: list[str], env: dict | None = None, cwd=None) -> Measurement:
    """Run cmd; peak RSS is the largest sum over the process tree seen while sampling."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {process.returncode}:\n{stderr[-3000:]}")
    return Measurement(wall, peak / 2**20)


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def median_of(runs: int, cmd: list[str], **kwargs) -> Measurement:
    results = [measure(cmd, **kwargs) for _ in range(runs)]
    return Measurement(statistics.median(r.wall_s for r in results),
                       statistics.median(r.peak_rss_mb for r in results))
