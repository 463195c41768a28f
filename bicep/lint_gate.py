"""Gate on the Bicep compiler's diagnostics: CI pipes `az bicep build` and `az bicep lint`
output here; any warning or error fails unless bicep/lint-accepted.txt lists its code for
that file, with the reason. Standard library only (CI runs it with the system Python).

    az bicep lint --file bicep/main.bicep 2>&1 | python3 bicep/lint_gate.py
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCEPTED = Path(__file__).with_name("lint-accepted.txt")
# /path/bicep/modules/x.bicep(12,5) : Warning no-unused-params: Parameter "a" is declared but never used.
DIAGNOSTIC = re.compile(r"^(?P<file>\S.*?\.bicep)\((?P<line>\d+),(?P<col>\d+)\) : "
                        r"(?P<level>Error|Warning|Info) (?P<code>[\w-]+): (?P<message>.*)$")


def accepted(path: Path = ACCEPTED) -> dict[tuple[str, str], str]:
    """(code, file under bicep/) -> reason, from `code file reason...` lines."""
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            raise SystemExit(f"{path.name}:{number}: expected 'code file reason', got {line!r}")
        entries[(parts[0], parts[1])] = parts[2]
    return entries


def bicep_relative(file: str) -> str:
    """The diagnostic's file as 'main.bicep' or 'modules/x.bicep'."""
    parts = Path(file.replace("\\", "/")).parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("bicep"):][1:]) if "bicep" in parts else Path(file).name


def evaluate(output: str, allowed: dict[tuple[str, str], str]) -> tuple[list[str], list[str]]:
    """(failures, accepted notes) of the compiler output."""
    failures, notes = [], []
    for line in output.splitlines():
        match = DIAGNOSTIC.match(line.strip())
        if not match or match["level"] == "Info":
            continue
        where = bicep_relative(match["file"])
        reason = allowed.get((match["code"], where))
        if reason and match["level"] == "Warning":
            notes.append(f"accepted {match['code']} in {where}: {reason}")
        else:
            failures.append(f"{where}({match['line']},{match['col']}) {match['level']} {match['code']}: "
                            f"{match['message']}")
    return failures, notes


def main() -> int:
    output = sys.stdin.read()
    failures, notes = evaluate(output, accepted())
    for note in notes:
        print(note)
    for failure in failures:
        print(f"bicep: {failure}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} diagnostic(s) not accepted: fix them, or list them with a reason in "
              f"{ACCEPTED.relative_to(ROOT)}.", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
