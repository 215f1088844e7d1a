"""install-service into a temporary root (--root), unit rendering and DeviceAllow= lines."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli import main
from edge.service_install import (
    InstallError,
    InstallOptions,
    device_allow_lines,
    install,
    plan_install,
    render_unit,
)
from edge.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "systemd" / "edgeqc.service"
EXAMPLE = REPO / "systemd" / "edgeqc.toml.example"
EXEC = "/opt/edgeqc/venv/bin/edgeqc"


@pytest.fixture
def pty() -> Iterator[str]:
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def service_lines(unit: str, key: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith(key + "=")]


def test_example_config_is_valid() -> None:
    s = load_settings(EXAMPLE)
    assert (s.camera.source, s.plc.port, s.archive.path) == ("/dev/video0", "/dev/ttyUSB0", "/var/lib/edgeqc/archive")
    assert s.metrics.host == "127.0.0.1" and s.model.path == "/var/lib/edgeqc/models/model.engine"


def test_install_into_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    example = tmp_path / "example.toml"  # an ONNX model: no GPU nodes in DeviceAllow= on any machine
    example.write_text(EXAMPLE.read_text().replace("models/model.engine", "models/model.onnx"))
    args = ["install-service", "--root", str(root), "--exec", EXEC, "--config-example", str(example)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "useradd --system --user-group --home-dir /var/lib/edgeqc" in out and "(not run with --root)" in out
    assert "systemctl enable edgeqc.service (not run with --root)" in out
    cfg = root / "etc/edgeqc/edgeqc.toml"
    assert cfg.read_text() == example.read_text() and stat.S_IMODE(cfg.stat().st_mode) == 0o640
    for folder, mode in (("var/lib/edgeqc", 0o750), ("var/lib/edgeqc/archive", 0o750)):
        assert stat.S_IMODE((root / folder).stat().st_mode) == mode
    unit = (root / "etc/systemd/system/edgeqc.service").read_text()
    assert service_lines(unit, "ExecStart") == [f"{EXEC} run --config /etc/edgeqc/edgeqc.toml"]
    assert service_lines(unit, "DeviceAllow") == ["char-video4linux rw", "char-ttyUSB rw"]
    assert service_lines(unit, "ReadWritePaths") == ["/var/lib/edgeqc"]
    # everything else is the template, line for line
    strip = ("ExecStart=", "DeviceAllow=", "ReadWritePaths=")
    assert [ln for ln in unit.splitlines() if not ln.startswith(strip)] == \
        [ln for ln in TEMPLATE.read_text().splitlines() if not ln.startswith(strip)]

    # a second run keeps the (edited) config and reports the unit unchanged
    cfg.write_text(example.read_text().replace('station_id = "station-1"', 'station_id = "line-7"'))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"keep existing config {cfg}" in out and "unchanged unit" in out
    assert 'station_id = "line-7"' in cfg.read_text()


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root), "--exec", EXEC, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"edgeqc install-service (dry run: nothing is changed), root {root}")
    assert f"       | ExecStart={EXEC} run --config /etc/edgeqc/edgeqc.toml" in out
    assert not root.exists()


def test_config_devices_fill_device_allow(tmp_path: Path, pty: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(EXAMPLE.read_text()
                   .replace('source = "/dev/video0"', 'source = "v4l2src device=/dev/video3 ! appsink"')
                   .replace('port = "/dev/ttyUSB0"', f'port = "{pty}"')
                   .replace('path = "/var/lib/edgeqc/archive"', 'path = "/data/archive"')
                   .replace('path = "/var/lib/edgeqc/models/model.engine"', 'path = "/var/lib/edgeqc/m.onnx"'))
    root = tmp_path / "root"
    plan = plan_install(InstallOptions(root=root, exec_path=EXEC, config_example=cfg))
    assert service_lines(plan.unit_text, "DeviceAllow") == ["char-video4linux rw", "char-pts rw"]
    assert service_lines(plan.unit_text, "ReadWritePaths") == ["/var/lib/edgeqc -/data/archive"]
    assert plan.warnings == []  # ONNX model: no GPU nodes needed
    plan = plan_install(InstallOptions(root=root, exec_path=EXEC, config_example=cfg, device_allow="path"))
    assert service_lines(plan.unit_text, "DeviceAllow") == ["/dev/video3 rw", f"{pty} rw"]


def test_device_allow_special_cases(pty: str) -> None:
    s = Settings(camera={"source": "nvarguscamerasrc sensor-id=0 ! nvvidconv ! appsink"},
                 plc={"port": "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"}, model={"path": "/m/x.engine"})
    lines, warnings = device_allow_lines(s, gpu_globs=[pty])
    # Argus camera: no V4L2 node of ours; absent by-id adapter: USB or ACM; GPU nodes by group
    assert lines == ["DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyACM rw", "DeviceAllow=char-pts rw"]
    assert warnings == []
    lines, warnings = device_allow_lines(s, gpu_globs=["/nonexistent/nvhost-*"])
    assert "none were found" in warnings[0]
    demo = Settings()  # demo camera, demo PLC on a pty pair, demo model
    assert device_allow_lines(demo)[0] == ["DeviceAllow=char-pts rw"]


def test_argus_camera_gets_socket_and_daemon_ordering(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(EXAMPLE.read_text().replace(
        'source = "/dev/video0"', 'source = "nvarguscamerasrc sensor-id=0 ! nvvidconv ! appsink"'))
    unit = plan_install(InstallOptions(root=tmp_path / "r", exec_path=EXEC, config_example=cfg)).unit_text
    head = unit.split("[Service]")[0]
    assert "After=nvargus-daemon.service\nWants=nvargus-daemon.service\nPartOf=nvargus-daemon.service\n" in head
    assert service_lines(unit, "BindPaths") == ["/tmp/argus_socket"]


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InstallError, match=r"under /home, /root or /run/user, which the unit hides"):
        plan_install(InstallOptions(root=tmp_path, exec_path="/home/op/edgeqc/.venv/bin/edgeqc"))
    for hidden in ("/tmp/venv/bin/edgeqc", "/var/tmp/venv/bin/edgeqc"):  # PrivateTmp=yes hides both
        with pytest.raises(InstallError) as err:
            plan_install(InstallOptions(root=tmp_path, exec_path=hidden))
        assert str(err.value).startswith(f"{hidden} is under /tmp or /var/tmp, which the unit replaces with its own "
                                         "empty folders (PrivateTmp=yes): install edgeqc elsewhere")
    with pytest.raises(InstallError, match=r"contains spaces"):
        plan_install(InstallOptions(root=tmp_path, exec_path="/opt/edge qc/bin/edgeqc"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[archive]\nmax_bytes = -1\n')
    with pytest.raises(InstallError, match=r"archive.max_bytes = -1"):
        plan_install(InstallOptions(root=tmp_path, exec_path=EXEC, config_example=bad))
    with pytest.raises(InstallError, match=r"lacks DeviceAllow=, ReadWritePaths= lines"):
        render_unit("[Service]\nExecStart=/x\n", exec_start="/y", device_allow=[], read_write=[])
    assert main(["install-service", "--root", str(tmp_path), "--exec", "relative/edgeqc"]) == 1
    assert "must be an absolute path" in capsys.readouterr().err
    if os.geteuid() != 0:
        with pytest.raises(InstallError, match="run it with sudo"):
            install(InstallOptions(exec_path=EXEC))


def test_unit_template_is_found_in_the_current_checkout_first(tmp_path: Path, monkeypatch) -> None:
    """`pip install .` (the README) puts the package in site-packages, away from systemd/: run
    from a checkout, install-service must use the checkout's unit."""
    from edge import checkout_path
    from edge.service_install import UNIT_NAME

    (tmp_path / "systemd").mkdir()
    (tmp_path / "systemd" / UNIT_NAME).write_text("[Unit]\n")
    monkeypatch.chdir(tmp_path)
    assert checkout_path("systemd", UNIT_NAME) == (tmp_path / "systemd").resolve()
    monkeypatch.chdir(tmp_path / "systemd")  # no systemd/edgeqc.service here: the package's checkout
    assert checkout_path("systemd", UNIT_NAME) == Path(__file__).resolve().parents[1] / "systemd"
