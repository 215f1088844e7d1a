"""Preflight: one test per problem, on real files, folders and pseudo-terminal device nodes."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from edge import service
from edge.cli import main
from edge.plc.pty import PtyPair
from edge.service import Identity, Problem, camera_device, device_allowed, preflight
from edge.settings import Settings

# Someone who is neither the owner of our files nor in their group.
OTHER = Identity("edgeqc", 54321, frozenset({54321}))


@pytest.fixture
def pty() -> Iterator[str]:
    """A real character device node (the slave end of a pseudo-terminal), owned by us."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield path
    os.close(slave)
    os.close(master)


def base(tmp_path: Path, **kw: object) -> Settings:
    """Settings that pass: demo camera and model, PLC off, archive in tmp_path."""
    data: dict[str, object] = {"camera": {"source": "demo"}, "plc": {"enabled": False},
                               "model": {"path": "demo"}, "archive": {"path": str(tmp_path / "archive")}}
    for k, v in kw.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v  # type: ignore[dict-item]
    return Settings(**data)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_all_good(tmp_path: Path) -> None:
    assert preflight(base(tmp_path), unit_path=None) == []


def test_camera_node_missing(tmp_path: Path) -> None:
    p = only(preflight(base(tmp_path, camera={"source": "7"}), unit_path=None))
    assert p.field == "camera.source" and p.severity == "error"
    assert p.problem == "camera device /dev/video7 does not exist"
    assert "v4l2-ctl --list-devices" in p.fix and str(p).startswith("ERROR camera.source: camera device /dev/video7")


def test_serial_node_missing(tmp_path: Path) -> None:
    p = only(preflight(base(tmp_path, plc={"enabled": True, "port": "/dev/ttyUSB9"}), unit_path=None))
    assert (p.field, p.problem) == ("plc.port", "serial device /dev/ttyUSB9 does not exist")
    assert "/dev/serial/by-id/" in p.fix


def test_serial_port_must_be_a_character_device(tmp_path: Path, pty: str) -> None:
    f = tmp_path / "somefile"
    f.write_bytes(b"")
    p = only(preflight(base(tmp_path, plc={"enabled": True, "port": str(f)}), unit_path=None))
    assert (p.field, p.severity) == ("plc.port", "error")
    assert p.problem == (f"{f} is a regular file, not a serial port: expected a serial device (character device "
                         "such as /dev/ttyUSB0) or a pyserial URL (socket://HOST:PORT, rfc2217://HOST:PORT)")
    link = tmp_path / "ttyV0"  # what socat link=... creates: a symlink to a pty
    link.symlink_to(pty)
    for port in (str(link), "socket://127.0.0.1:5020", "demo"):
        assert preflight(base(tmp_path, plc={"enabled": True, "port": port}), unit_path=None) == [], port


@pytest.mark.parametrize("sysfs", [True, False], ids=["sysfs", "open-isatty"])
def test_serial_port_must_be_a_tty(tmp_path: Path, pty: str, sysfs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sysfs:  # a system without /sys/dev/char: the node is opened and asked isatty()
        monkeypatch.setattr(service, "_SYSFS_CHAR", tmp_path / "no-sysfs")
    link = tmp_path / "ttyV1"
    link.symlink_to("/dev/null")
    for port, shown in (("/dev/null", "/dev/null"), ("/dev/zero", "/dev/zero"), (str(link), f"{link} (-> /dev/null)")):
        p = only(preflight(base(tmp_path, plc={"enabled": True, "port": port}), unit_path=None))
        assert (p.field, p.severity) == ("plc.port", "error")
        assert p.problem == (f"{shown} is a character device but not a serial port (not a tty): expected a serial "
                             "device (such as /dev/ttyUSB0) or a pyserial URL (socket://HOST:PORT, rfc2217://HOST:PORT)")
        assert p.fix == ("set plc.port to the adapter's node (`ls -l /dev/serial/by-id/`), a pyserial URL, "
                         'or "demo" for the built-in PLC simulator')
    assert preflight(base(tmp_path, plc={"enabled": True, "port": pty}), unit_path=None) == []
    if shutil.which("socat") is None:
        return
    with PtyPair(backend="socat", link_a=tmp_path / "plc", link_b=tmp_path / "edge") as pair:
        for port in (pair.a, pair.b, pair.device_a):
            assert preflight(base(tmp_path, plc={"enabled": True, "port": port}), unit_path=None) == [], port
        # the preflight's open/close left the pair working: bytes still cross it
        with serial.Serial(pair.a, timeout=5) as a, serial.Serial(pair.b, timeout=5) as b:
            a.write(b"TRG,A1\r\n")
            assert b.readline() == b"TRG,A1\r\n"
        assert pair.alive


def test_loop_url_refused_it_would_nak_its_own_heartbeats(tmp_path: Path) -> None:
    p = only(preflight(base(tmp_path, plc={"enabled": True, "port": "loop://"}), unit_path=None))
    assert (p.field, p.severity) == ("plc.port", "error")
    assert p.problem.startswith("loop:// echoes every telegram the station sends back to the station itself")
    assert "demo" in p.fix


def test_not_a_device_node(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("/dev/shm absent")
    p = only(preflight(base(tmp_path, camera={"source": "/dev/shm"}), unit_path=None))
    assert p.problem.startswith("/dev/shm is not a character device node (mode d")


def test_device_not_accessible_needs_udev_rule(tmp_path: Path, pty: str) -> None:
    os.chmod(pty, 0o620)  # what devpts gives: group may only write
    s = base(tmp_path, plc={"enabled": True, "port": pty}, archive={"enabled": False})
    p = only(preflight(s, user=OTHER, unit_path=None))
    assert p.field == "plc.port"
    assert p.problem.startswith(f"serial device {pty} (crw--w----") and p.problem.endswith(
        "is not readable and writable by user edgeqc")
    assert f'KERNEL=="{Path(pty).name}", GROUP="dialout", MODE="0660"' in p.fix


def test_device_group_membership(tmp_path: Path, pty: str) -> None:
    os.chmod(pty, 0o660)
    if os.stat(pty).st_gid == 0:  # a container's devpts without gid=5: give it the dialout group
        if os.geteuid() != 0:
            pytest.skip("pty group is root and we cannot chown it")
        os.chown(pty, -1, grp.getgrnam("dialout").gr_gid)
    gid = os.stat(pty).st_gid
    group = grp.getgrgid(gid).gr_name
    s = base(tmp_path, camera={"source": pty}, archive={"enabled": False})
    p = only(preflight(s, user=OTHER, unit_path=None))
    assert p.problem.startswith(f"camera device {pty} (crw-rw----") and "user edgeqc" in p.problem
    assert p.fix.startswith(f"add the user to group '{group}': `sudo usermod -aG {group} edgeqc`")
    member = Identity("edgeqc", 54321, frozenset({54321, gid}))
    assert preflight(s, user=member, unit_path=None) == []


def test_unit_device_allow_must_cover_devices(tmp_path: Path, pty: str) -> None:
    unit = tmp_path / "edgeqc.service"
    unit.write_text("[Service]\nDevicePolicy=closed\nDeviceAllow=/dev/null rw\n")
    s = base(tmp_path, plc={"enabled": True, "port": pty})
    p = only(preflight(s, unit_path=unit))
    assert p.field == "plc.port"
    assert p.problem == (f"{pty} is not in the DeviceAllow= list of {unit} (DevicePolicy=closed), "
                         "so the service cannot open it")
    assert "edgeqc install-service" in p.fix
    unit.write_text("[Service]\nDevicePolicy=closed\nDeviceAllow=char-pts rw\n")
    assert preflight(s, unit_path=unit) == []
    assert device_allowed(pty, ["char-p?s"]) and not device_allowed(pty, ["char-tty*", "/dev/null"])
    unit.write_text("[Service]\nDeviceAllow=/dev/null rw\n")  # no DevicePolicy: everything allowed
    assert preflight(s, unit_path=unit) == []


def test_model_missing(tmp_path: Path) -> None:
    p = only(preflight(base(tmp_path, model={"path": str(tmp_path / "nope.onnx")}), unit_path=None))
    assert (p.field, p.problem) == ("model.path", f"{tmp_path / 'nope.onnx'} does not exist")


def test_model_not_readable(tmp_path: Path) -> None:
    m = tmp_path / "m.onnx"
    m.write_bytes(b"x")
    os.chmod(m, 0o600)
    p = only(preflight(base(tmp_path, model={"path": str(m)}, archive={"enabled": False}), user=OTHER,
                       unit_path=None))
    assert p.problem.startswith(f"{m} (-rw-------") and p.problem.endswith("is not readable by user edgeqc")


def test_model_backend_mismatch(tmp_path: Path) -> None:
    onnx, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    onnx.write_bytes(b"x")
    engine.write_bytes(b"x")
    p = only(preflight(base(tmp_path, model={"path": str(onnx), "backend": "tensorrt"}), unit_path=None))
    assert p.field == "model.backend"
    assert p.problem == "backend tensorrt loads a serialized engine (.engine/.plan), not m.onnx"
    p = only(preflight(base(tmp_path, model={"path": str(engine), "backend": "onnxruntime"}), unit_path=None))
    assert p.problem == "backend onnxruntime cannot load the TensorRT engine m.engine"


def test_model_corrupt(tmp_path: Path) -> None:
    m = tmp_path / "m.onnx"
    m.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    p = only(preflight(base(tmp_path, model={"path": str(m)}), unit_path=None))
    assert p.field in ("model", "model.path") and "not a readable ONNX model" in p.problem


def test_model_empty_is_unreadable_not_a_metadata_problem(tmp_path: Path) -> None:
    m = tmp_path / "m.onnx"
    m.write_bytes(b"")
    p = only(preflight(base(tmp_path, model={"path": str(m)}), unit_path=None))
    # field model.path (not "model"): `edgeqc run` exits 1 like for a truncated file, not 2 (config)
    assert p.field == "model.path" and f"model file {m} is empty (0 bytes)" in p.problem


def test_model_labels_mismatch(tmp_path: Path, effnet_path: Path) -> None:
    s = base(tmp_path, model={"path": str(effnet_path), "labels": ["good", "bad"]})
    p = only(preflight(s, unit_path=None))
    assert p.field == "model" and "has 2 labels ['good', 'bad'] but model model.onnx output" in p.problem


def test_engine_without_sidecar(tmp_path: Path) -> None:
    e = tmp_path / "m.engine"
    e.write_bytes(b"plan bytes")
    p = only(preflight(base(tmp_path, model={"path": str(e)}), unit_path=None))
    assert p.field == "model.path" and f"sidecar {e}.json is missing" in p.problem
    assert "edgeqc build" in p.fix


def test_engine_plan_hash_mismatch(tmp_path: Path) -> None:
    e = tmp_path / "m.engine"
    e.write_bytes(b"plan bytes")
    side = {"trt_version": "10.3.0", "compute_capability": [8, 7], "plan_sha256": "0" * 64,
            "model_spec": {}, "inputs": [], "outputs": []}
    Path(f"{e}.json").write_text(json.dumps(side))
    p = only(preflight(base(tmp_path, model={"path": str(e)}), unit_path=None))
    real = hashlib.sha256(b"plan bytes").hexdigest()
    assert p.problem == (f"engine {e}: plan sha256 mismatch: sidecar records {'0' * 16}…, the plan file hashes "
                         f"to {real[:16]}… (plan replaced or corrupted, or sidecar of another engine)")
    assert p.fix == "rebuild the engine on this device with `edgeqc build`"


def test_archive_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = only(preflight(base(tmp_path, archive={"path": str(blocker / "archive")}), unit_path=None))
    assert p.field == "archive.path"
    assert p.problem == f"{blocker} is not a folder, so {blocker / 'archive'} cannot be used as archive"


def test_archive_not_writable(tmp_path: Path) -> None:
    arc = tmp_path / "archive"
    arc.mkdir(mode=0o755)
    p = only(preflight(base(tmp_path), user=OTHER, unit_path=None))
    assert p.problem.startswith(f"archive folder {arc} is not writable by user edgeqc (drwxr-xr-x")
    assert p.fix.startswith(f"`sudo install -d -o edgeqc -g edgeqc -m 0750 {arc}`")
    shutil.rmtree(arc)
    p = only(preflight(base(tmp_path, archive={"path": str(arc / "sub")}), user=OTHER, unit_path=None))
    assert p.problem.startswith(f"{tmp_path} (where the archive folder {arc / 'sub'} would be created) is not "
                                "writable by user edgeqc")


def test_archive_larger_than_filesystem_is_a_warning(tmp_path: Path) -> None:
    p = only(preflight(base(tmp_path, archive={"max_bytes": 10**18}), unit_path=None))
    assert (p.field, p.severity) == ("archive.max_bytes", "warning")
    assert p.problem.startswith("1000000000000000000 bytes is more than the whole filesystem of")


def test_camera_device_parsing() -> None:
    assert camera_device("0") == "/dev/video0"
    assert camera_device("/dev/video2") == "/dev/video2"
    assert camera_device("v4l2src device=/dev/video1 ! videoconvert ! appsink") == "/dev/video1"
    assert camera_device("rtsp://cam/stream") is None and camera_device("demo") is None


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[camera]\nsource = "demo"\n[plc]\nenabled = false\n[archive]\npath = "{tmp_path / "a"}"\n')
    assert main(["preflight", "--config", str(good), "--unit", ""]) == 0
    assert capsys.readouterr().out.strip() == "preflight: OK"
    bad = tmp_path / "bad.toml"
    bad.write_text('[camera]\nsource = "/dev/video77"\n[plc]\nenabled = false\n'
                   f'[archive]\npath = "{tmp_path / "a"}"\n')
    assert main(["preflight", "--config", str(bad), "--unit", ""]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ERROR camera.source: camera device /dev/video77 does not exist. Fix: ")
    assert out[-1] == "preflight: 1 error(s), 0 warning(s)"
    assert main(["preflight", "--config", str(good), "--user", "no-such-user-xyz", "--unit", ""]) == 1
    assert "no user 'no-such-user-xyz'" in capsys.readouterr().err


def test_more_model_threads_than_cpus_is_a_warning_naming_the_field(tmp_path: Path) -> None:
    from edge.backends.onnxruntime import usable_cpus

    cpus = usable_cpus()
    p = only(preflight(base(tmp_path, model={"intra_op_threads": cpus + 97}), unit_path=None))
    assert (p.field, p.severity) == ("model.intra_op_threads", "warning")
    assert p.problem.startswith(f"{cpus + 97} is more than the {cpus} CPUs this process may use (the runtime uses {cpus}")
    assert f"or at most {cpus}" in p.fix
    assert preflight(base(tmp_path, model={"intra_op_threads": cpus}), unit_path=None) == []
