"""Gate on checkov's scan of bicep/ or terraform/: `make scan` runs this with the checkov of `.venv-scan`.

    python3 bicep/scan.py [--framework bicep|terraform] [--dir DIR]

checkov skips a file it cannot parse and still exits 0, so this reads its JSON report
and fails on any parsing error, any failed check, or a directory with nothing scanned.
Standard library only (it runs with the system Python, next to checkov's own venv).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BICEP_DIR = ROOT / "bicep"
DIRECTORIES = {"bicep": BICEP_DIR, "terraform": ROOT / "terraform"}


def run_checkov(checkov: str, directory: Path, framework: str = "bicep") -> dict:
    env = dict(os.environ)
    # Offline: no vendor API key, no check-metadata download; it carries on without them.
    env.pop("BC_API_KEY", None)
    env.setdefault("BC_SKIP_MAPPING", "TRUE")
    env.setdefault("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
    result = subprocess.run([checkov, "--framework", framework, "-d", str(directory), "-o", "json",
                             "--skip-download"],
                            capture_output=True, text=True, env=env, timeout=600)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"scan: checkov printed no JSON report (exit {result.returncode}).")
    if isinstance(report, list):  # one report per framework
        report = next((r for r in report if r.get("check_type") == framework), report[0])
    return report


def evaluate(report: dict, directory: Path, framework: str = "bicep") -> list[str]:
    """The problems in a checkov JSON report (empty: the scan passed)."""
    problems = []
    results = report.get("results")
    summary = report.get("summary", {})
    if results is None:
        return [f"checkov found nothing to scan in {directory} (summary: {summary})."]
    for path in results.get("parsing_errors", []):
        problems.append(f"parsing error (checkov skipped the file): {path}")
    for check in results.get("failed_checks", []):
        problems.append(f"{check['check_id']} failed: {check['check_name']} "
                        f"({check['file_path']}, {check['resource']})")
    if summary.get("parsing_errors", 0) and not results.get("parsing_errors"):
        problems.append(f"{summary['parsing_errors']} parsing error(s) (see the checkov report).")
    if not summary.get("resource_count"):
        problems.append(f"checkov found no {framework} resource in {directory}.")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python3 bicep/scan.py --framework terraform")
    parser.add_argument("--checkov", default=str(ROOT / ".venv-scan" / "bin" / "checkov"))
    parser.add_argument("--framework", choices=sorted(DIRECTORIES), default="bicep")
    parser.add_argument("--dir", type=Path, help="directory to scan (default: bicep/ or terraform/)")
    args = parser.parse_args(argv)
    directory = args.dir or DIRECTORIES[args.framework]
    report = run_checkov(args.checkov, directory, args.framework)
    summary = report.get("summary", {})
    for check in report.get("results", {}).get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        print(f"skipped {check['check_id']} in {check['file_path']}: {reason}")
    print(f"checkov {summary.get('checkov_version', '?')}: passed {summary.get('passed', 0)}, "
          f"failed {summary.get('failed', 0)}, skipped {summary.get('skipped', 0)}, "
          f"parsing errors {summary.get('parsing_errors', 0)}")
    problems = evaluate(report, directory, args.framework)
    for problem in problems:
        print(f"scan: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
