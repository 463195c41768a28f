"""`python -m bench.sweep`: what the work queue saves over one process per grid line.

On the shipped grid (data/sweep.csv), against an in-memory Azurite (blob + queue):
- (a) one `python main.py` process per line, one after another (N separate ADF runs);
- (b) the sweep with 1 runner (trainer/node_runner.py, one Python start);
- (c) the sweep with 2 runners in parallel.
Wall time of each, and the runners' per-phase timings (receive, upload, post) for the queue
and publish overhead per line. Writes a section of docs/performance.md (between markers).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from adf.sweep_grid import load_grid
from workspace.azurite import AzuriteProcess
from workspace.queues import AzuriteQueueProcess, SweepQueues
from workspace.settings import REPO_ROOT

GRID = REPO_ROOT / "data" / "sweep.csv"
DOC = REPO_ROOT / "docs" / "performance.md"
TRAINER = REPO_ROOT / "trainer"
BEGIN, END = "<!-- sweep-bench -->", "<!-- /sweep-bench -->"
UPLOAD = re.compile(r"\[trainer\] upload\s+done in\s+([\d.]+) s")


def _env(azurite) -> dict:
    return {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}


def per_process(azurite, container: str, lines, workdir: Path) -> float:
    started = time.perf_counter()
    for entry in lines:
        argv = [sys.executable, str(TRAINER / "main.py"), "--iris-csv", str(REPO_ROOT / "data" / "iris_csv.csv"),
                "--containerName", f"{container}/models", "--outputs-json", str(workdir / "o.json")]
        for key, value in entry.params.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        subprocess.run(argv, cwd=workdir, env=_env(azurite), check=True, capture_output=True)
    return time.perf_counter() - started


def swept(azurite, queue, container: str, lines, runners: int, workdir: Path) -> dict:
    """Queue the grid, run `runners` node runners to the end; wall time and their phases."""
    from azure.storage.queue import QueueServiceClient

    from workspace.settings import AZURITE_ACCOUNT, AZURITE_KEY

    sweep_id = f"sw-bench-{uuid.uuid4().hex[:8]}"
    service = QueueServiceClient(queue.queue_endpoint, credential={
        "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY})
    queues = SweepQueues(service, sweep_id)
    queues.create()
    started = time.perf_counter()
    for entry in lines:
        queues.send("work", {"sweep": sweep_id, "line": entry.line, "params": entry.params})
    processes = [subprocess.Popen(
        [sys.executable, str(TRAINER / "node_runner.py"), "--sweep-id", sweep_id,
         "--queue-url", queue.queue_endpoint, "--iris-csv", str(REPO_ROOT / "data" / "iris_csv.csv"),
         "--containerName", f"{container}/models", "--grace-period", "0.5", "--poll-interval", "0.2",
         "--outputs-json", str(workdir / f"runner-{i}.json")],
        cwd=workdir, env=_env(azurite), stdout=subprocess.PIPE, text=True) for i in range(runners)]
    outs = [p.communicate()[0] for p in processes]
    wall = time.perf_counter() - started
    outputs = [json.loads((workdir / f"runner-{i}.json").read_text()) for i in range(runners)]
    done = sum(o["done"] for o in outputs)
    upload = sum(float(m) for out in outs for m in UPLOAD.findall(out))
    overhead = sum(o["seconds"]["receive"] + o["seconds"]["post"] for o in outputs) + upload
    queues.delete()
    return {"wall": wall, "done": done, "overhead_per_line": overhead / max(done, 1),
            "queue_per_line": (overhead - upload) / max(done, 1), "upload_per_line": upload / max(done, 1)}


def render(lines: int, a: float, b: dict, c: dict) -> str:
    rows = [("(a)/(b): start-up amortised", a / b["wall"], "≥ 2", a / b["wall"] >= 2),
            ("(b)/(c): 2 runners", b["wall"] / c["wall"], "≥ 1.7", b["wall"] / c["wall"] >= 1.7),
            ("queue + publish overhead per line (b)", b["overhead_per_line"], "≤ 0.3 s",
             b["overhead_per_line"] <= 0.3)]
    text = [BEGIN, "## Sweep: one process per line vs the work queue", "",
            f"Measured by `make bench` (`python -m bench.sweep`) on the shipped grid "
            f"(`data/sweep.csv`, {lines} lines), against an in-memory Azurite.", "",
            "| case | wall time | per line |", "| --- | --- | --- |",
            f"| (a) one `python main.py` per line, in sequence | {a:.1f} s | {a / lines:.2f} s |",
            f"| (b) sweep, 1 runner | {b['wall']:.1f} s | {b['wall'] / lines:.2f} s |",
            f"| (c) sweep, 2 runners | {c['wall']:.1f} s | {c['wall'] / lines:.2f} s |", "",
            f"Overhead per line in (b): queue (receive, post result, delete) "
            f"{b['queue_per_line']:.3f} s, publish (upload) {b['upload_per_line']:.3f} s.", "",
            "| check | measured | target | result |", "| --- | --- | --- | --- |"]
    text += [f"| {name} | {value:.2f} | {target} | {'PASS' if ok else 'FAIL'} |"
             for name, value, target, ok in rows]
    text += ["", "Why a target can miss: after start-up a line takes about half a second in-process, "
             "while each runner's start (Python, pandas, scikit-learn, MLflow imports) takes "
             "seconds to tens of seconds on a loaded machine. On a 16-line grid the start-up "
             "dominates, and 2 runners on 2 shared cores import at the same time, so (b)/(c) "
             "stays far below 1.7 here, even below 1 while other work keeps the cores busy "
             "(the second start-up only competes with the first); it approaches the runner count only when the lines' "
             "work is much larger than one start-up (longer grids, more epochs, one node per "
             "runner on Batch)."]
    return "\n".join(text + ["", END])


def write_section(section: str) -> None:
    current = DOC.read_text() if DOC.exists() else ""
    if BEGIN in current:
        current = current[:current.index(BEGIN)] + current[current.index(END) + len(END):]
    DOC.write_text(current.rstrip("\n") + "\n\n" + section + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = parser.parse_args(argv)
    lines = load_grid(GRID)
    with AzuriteProcess() as azurite, AzuriteQueueProcess() as queue, \
            tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        from azure.storage.blob import BlobServiceClient

        container = f"bench{uuid.uuid4().hex[:8]}"
        BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
        workdir = Path(tmp)
        a = per_process(azurite, container, lines, workdir)
        print(f"(a) one process per line: {a:.1f} s", flush=True)
        b = swept(azurite, queue, container, lines, 1, workdir)
        print(f"(b) 1 runner: {b['wall']:.1f} s, overhead {b['overhead_per_line']:.3f} s/line", flush=True)
        c = swept(azurite, queue, container, lines, 2, workdir)
        print(f"(c) 2 runners: {c['wall']:.1f} s", flush=True)
    section = render(len(lines), a, b, c)
    print(section)
    if not args.no_doc:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
