#!/bin/bash
# Pool start task (pool-scope admin auto-user, runs on every node before any task):
# installs trainer/requirements.txt into the fixed virtualenv the ADF activity calls,
# /opt/iris-trainer/venv/bin/python. Bicep embeds this script and the requirements file
# (both base64, in the start task's environment) so trainer/requirements.txt stays the
# only list of the trainer's packages.
#
# Environment: TRAINER_REQUIREMENTS_B64 (required); IRIS_TRAINER_ROOT (default
# /opt/iris-trainer) and IRIS_PYTHON (default python3.11) exist for testing.
set -euo pipefail

root="${IRIS_TRAINER_ROOT:-/opt/iris-trainer}"
python="${IRIS_PYTHON:-python3.11}"

if [ -z "${TRAINER_REQUIREMENTS_B64:-}" ]; then
  echo "start task: TRAINER_REQUIREMENTS_B64 is empty; the pool definition must embed trainer/requirements.txt" >&2
  exit 2
fi

# The trainer's pins need Python 3.11+; Ubuntu 22.04 ships 3.10, so add 3.11 from the
# distribution's own archive. Wait for the boot-time apt runs instead of failing on the lock.
if ! command -v "$python" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -q
  apt-get -o DPkg::Lock::Timeout=900 install -y -q python3.11 python3.11-venv
fi

mkdir -p "$root"
printf '%s' "$TRAINER_REQUIREMENTS_B64" | base64 -d > "$root/requirements.txt.new"
mv "$root/requirements.txt.new" "$root/requirements.txt"

# Rebuild the virtualenv only when the requirements changed (the start task also runs on
# every reboot and re-image).
if [ -x "$root/venv/bin/python" ] && cmp -s "$root/requirements.txt" "$root/venv/.requirements.txt"; then
  echo "start task: $root/venv is up to date"
  exit 0
fi
rm -rf "$root/venv"
"$python" -m venv "$root/venv"
"$root/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$root/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt"
cp "$root/requirements.txt" "$root/venv/.requirements.txt"
# Tasks run as a non-admin auto-user: they read and execute, never write, the virtualenv.
chmod -R a+rX "$root"
echo "start task: installed $(wc -l < "$root/requirements.txt") requirement lines into $root/venv"
