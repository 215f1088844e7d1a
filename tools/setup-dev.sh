#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian/Ubuntu x86-64 box:
#   Debian packages: socat (pty pairs for the PLC link tests), chromium (review page browser test),
#   systemd (systemd-analyze verify/security of the unit);
#   a virtual environment .venv with edgeqc and its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v socat >/dev/null || need+=(socat)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup-dev: OK ($(.venv/bin/python --version), $(.venv/bin/python -c 'import onnxruntime as o; print("onnxruntime", o.__version__)'))"
