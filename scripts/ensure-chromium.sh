#!/usr/bin/env bash
# Make sure Debian's `chromium` is on PATH for the browser tests (tests/test_report.py).
# Idempotent: says nothing and changes nothing when chromium is already there. Otherwise
# installs it with apt-get (root, or passwordless sudo), without recommended packages: those
# add ~90 packages (systemd, avahi, printing tools) the headless browser does not need.
# Exits non-zero with the reason when it cannot install.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

fail() {
  echo "ensure-chromium: $1" >&2
  echo "ensure-chromium: install Debian's 'chromium' package by hand, or set SKIP_BROWSER_TESTS=1 to skip the browser tests." >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 ||
  fail "chromium is not installed and this machine has no apt-get to install it with."

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  fail "chromium is not installed and installing it needs root: run 'sudo scripts/ensure-chromium.sh'."
fi

apt_get() {
  # Waits for another apt/dpkg run to finish instead of failing on its lock.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 "$@"
}

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "ensure-chromium: installing chromium with apt-get (about 120 MB to download)..." >&2
started=$SECONDS

apt_get update >"$log" 2>&1 || { tail -n 20 "$log" >&2; fail "'apt-get update' failed (output above)."; }

candidate="$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
  fail "the apt sources of this machine have no 'chromium' package (it is a Debian package; Ubuntu ships Chromium as a snap, which does not run in containers)."
fi

# fonts-dejavu-core: without any font the page's text renders as empty boxes.
apt_get install --no-install-recommends chromium fonts-dejavu-core >"$log" 2>&1 ||
  { tail -n 20 "$log" >&2; fail "'apt-get install chromium' failed (output above)."; }

command -v chromium >/dev/null 2>&1 || fail "apt-get installed chromium but it is not on PATH."
version="$(chromium --version 2>/dev/null)" || fail "chromium was installed but 'chromium --version' fails."
echo "ensure-chromium: ${version} installed in $((SECONDS - started)) s." >&2
