"""Clean-ups that `python -m workspace down` runs after it stops the local services.

A part of the project that keeps local state with processes of its own (the deployer's
local scoring jobs) registers its clean-up here, as a module to run: `down` runs each one
as `python -m <module> <args>` and passes on what it prints. The shared floor (workspace/)
so never imports the parts above it.

A registration is a file `<LOCAL_DIR>/cleanups/<name>.json`: {"module": ..., "args": [...]}.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from workspace.settings import REPO_ROOT

CLEANUPS_DIR = "cleanups"
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
TIMEOUT_SECONDS = 120


def register_cleanup(local_path: Path, name: str, module: str, *args: str) -> None:
    """Have `workspace down` run `python -m <module> <args>` (written once; idempotent)."""
    if not MODULE.fullmatch(module):
        raise ValueError(f"'{module}' is not a module name")
    path = Path(local_path) / CLEANUPS_DIR / f"{name}.json"
    body = json.dumps({"module": module, "args": list(args)})
    try:
        if path.read_text() == body:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(body)
    partial.replace(path)


def run_cleanups(local_path: Path, say: Callable[[str], None]) -> bool:
    """Run every registered clean-up, in name order; each line it prints goes to `say`. A
    clean-up that fails (or a registration that cannot be read) is said and skipped; returns
    whether all of them succeeded."""
    ok = True
    for path in sorted((Path(local_path) / CLEANUPS_DIR).glob("*.json")):
        try:
            spec = json.loads(path.read_text())
            module, args = spec["module"], [str(a) for a in spec.get("args", [])]
            if not isinstance(module, str) or not MODULE.fullmatch(module):
                raise ValueError(f"'{module}' is not a module name")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            say(f"warning: skipped clean-up {path}: {exc}")
            ok = False
            continue
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                                  env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            say(f"warning: clean-up {path.stem} did not finish within {TIMEOUT_SECONDS} s.")
            ok = False
            continue
        for line in done.stdout.splitlines():
            say(line)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            say(f"warning: clean-up {path.stem} failed (exit {done.returncode}): {last}")
            ok = False
    return ok
