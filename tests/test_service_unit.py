"""The systemd unit: `systemd-analyze verify` silent and `security` exposure within the threshold
(tools/check_systemd.sh), and the keys the service contract relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edgeqc.service"
SCRIPT = REPO / "tools" / "check_systemd.sh"

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


def run_check(*units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *units], cwd=REPO, check=False, capture_output=True, text=True,
                          timeout=300)


@needs_systemd
def test_check_systemd_passes_for_template_and_rendered_unit() -> None:
    proc = run_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[1] for ln in lines] == ["verify", "security", "verify", "security"]
    exposures = [float(m.group(1)) for m in re.finditer(r": (\d+\.\d) (OK|LOW|MEDIUM)", proc.stdout)]
    assert len(exposures) == 2 and all(e <= 2.0 for e in exposures), proc.stdout


@needs_systemd
def test_check_systemd_fails_on_any_verify_output(tmp_path: Path) -> None:
    bad = tmp_path / "edgeqc.service"
    bad.write_text(UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nProtectSytem=strict"))
    proc = run_check(str(bad))
    assert proc.returncode == 1
    assert "FAIL verify" in proc.stdout and "Unknown key 'ProtectSytem' in section [Service]" in proc.stdout


@needs_systemd
def test_check_systemd_fails_above_threshold(tmp_path: Path) -> None:
    weak = tmp_path / "edgeqc.service"
    weak.write_text("\n".join(ln for ln in UNIT.read_text().splitlines()
                              if not ln.startswith(("Protect", "Private", "SystemCall", "Restrict"))) + "\n")
    proc = run_check(str(weak))
    assert proc.returncode == 1 and "FAIL security" in proc.stdout and "ok   verify" in proc.stdout


def test_unit_has_the_contract_keys() -> None:
    text = UNIT.read_text()
    want = ["Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=on-failure", "StartLimitIntervalSec=10min",
            "StartLimitBurst=5", "User=edgeqc", "SupplementaryGroups=video dialout", "NoNewPrivileges=yes",
            "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "ReadWritePaths=/var/lib/edgeqc",
            "DevicePolicy=closed", "ExecReload=/bin/kill -HUP $MAINPID",
            "ExecStart=/usr/local/bin/edgeqc run --config /etc/edgeqc/edgeqc.toml",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "SystemCallFilter=@system-service"]
    lines = set(text.splitlines())
    assert [w for w in want if w not in lines] == []
