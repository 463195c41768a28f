"""The deploy-iris Custom activity's program, on the Batch node (and in the local runner's
task directory): `python deploy_task.py register-and-deploy [options]`.

The node downloads folderPath flattened, so the project's packages arrive as one archive
(adf/staging.py builds it: deployer/, workspace/, adf/ with their specs and data files).
This script, staged next to it, unpacks it into the task directory, takes the deployment's
settings from activity.json (`typeProperties.extendedProperties.settings`, non-secret
values; an empty one is left unset) and runs `python -m deployer ARGS` from there with the
pool's user-assigned managed identity (`extendedProperties.poolIdentityClientId` →
AZURE_CLIENT_ID, which DefaultAzureCredential uses). Its exit code is the deployer's.
Standard library only: it runs before the packages are on the path.
"""
from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

ARCHIVE = "iris-packages.zip"
PACKAGES_DIR = "packages"


def main(argv: list[str]) -> int:
    here = Path.cwd()
    try:
        activity = json.loads((here / "activity.json").read_text())
        with zipfile.ZipFile(here / ARCHIVE) as archive:
            archive.extractall(here / PACKAGES_DIR)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        print(f"deploy_task: {exc}; stage the packages with `python -m adf stage`.",
              file=sys.stderr)
        return 2
    extended = (activity.get("typeProperties") or {}).get("extendedProperties") or {}
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (extended.get("settings") or {}).items()
                if v not in (None, "")})
    if extended.get("poolIdentityClientId"):
        env["AZURE_CLIENT_ID"] = str(extended["poolIdentityClientId"])
    packages = here / PACKAGES_DIR
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(packages), env.get("PYTHONPATH")]))
    os.chdir(packages)
    os.execve(sys.executable, [sys.executable, "-m", "deployer", *argv], env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
