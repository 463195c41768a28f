"""Wall time and peak memory of a command, its child processes included.

Memory of a process tree is measured two ways:
- PSS (proportional set size), summed over the tree: each page counts once, shared pages
  split between the processes that share them (the forked scoring processes share the
  runner's libraries and model). This is the memory the command really occupies.
- RSS summed over the tree, for reference: shared pages count once per process, so it
  overstates a tree of forked processes.
RSS is sampled every 20 ms; PSS, which costs the kernel a walk of each process's page
tables (milliseconds), and the list of processes (a scan of /proc) every 200 ms, so that
measuring does not slow the command down.
"""
from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass

import psutil

SAMPLE_SECONDS = 0.02
PSS_EVERY = 10  # samples


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_pss_mb: float
    peak_rss_mb: float  # summed RSS (shared pages counted once per process)


def measure(cmd: list[str], env: dict | None = None, cwd=None) -> Measurement:
    """Run cmd; the peaks are the largest sums over the process tree seen while sampling."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak_rss = peak_pss = 0
    sample = 0
    tree = [root]
    while process.poll() is None:
        try:
            if sample % PSS_EVERY == 0:
                tree = [root, *root.children(recursive=True)]
                peak_pss = max(peak_pss, sum(_memory(p, "pss") for p in tree))
            peak_rss = max(peak_rss, sum(_memory(p, "rss") for p in tree))
        except psutil.NoSuchProcess:
            pass
        sample += 1
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {process.returncode}:\n{stderr[-3000:]}")
    return Measurement(wall, peak_pss / 2**20, peak_rss / 2**20)


def _memory(process: psutil.Process, kind: str) -> int:
    try:
        if kind == "pss":
            return process.memory_full_info().pss
        return process.memory_info().rss
    except psutil.Error:
        return 0


def median_of(runs: int, cmd: list[str], **kwargs) -> Measurement:
    results = [measure(cmd, **kwargs) for _ in range(runs)]
    return Measurement(statistics.median(r.wall_s for r in results),
                       statistics.median(r.peak_pss_mb for r in results),
                       statistics.median(r.peak_rss_mb for r in results))
