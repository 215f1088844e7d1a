"""``edgeqc install-service``: user, folders, config, unit with the config's devices, enable.

The unit template (``systemd/edgeqc.service``) is a valid unit on its own; installing rewrites
three kinds of lines from the configuration:

* ``ExecStart=`` — the installed ``edgeqc`` (by default the one next to the running Python, i.e.
  the venv's), ``run --config <config>``;
* ``DeviceAllow=`` — the camera and serial port the config names, plus the GPU nodes TensorRT
  (and Jetson NVMM camera pipelines) need; by device group (``char-video4linux``, from
  ``/proc/devices``) so a re-plugged camera or adapter that comes back under a new minor
  number still works, or with ``--device-allow path`` the exact nodes only;
* ``ReadWritePaths=`` — ``/var/lib/edgeqc`` and the archive folder when it lies elsewhere.

With ``--root DIR`` files go under ``DIR`` and no command (useradd, chown, systemctl) is run: for
tests and image builds. ``--dry-run`` prints every step and the unit, and changes nothing.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge import checkout_path
from edge.service import _proc_devices, camera_device, serial_device

UNIT_NAME = "edgeqc.service"
REPO_SYSTEMD = checkout_path("systemd", UNIT_NAME)  # the checkout run from, else beside this package
STATE_DIR = Path("/var/lib/edgeqc")
CONFIG_PATH = Path("/etc/edgeqc/edgeqc.toml")
GROUPS = ("video", "dialout")
# Device nodes CUDA/TensorRT open: Jetson (nvhost, nvmap, nvgpu) and discrete GPUs (nvidia*).
GPU_NODE_GLOBS = ("/dev/nvhost-*", "/dev/nvmap", "/dev/nvgpu/*/*", "/dev/nvsciipc", "/dev/host1x-fence",
                  "/dev/nvidia[0-9]*", "/dev/nvidiactl", "/dev/nvidia-uvm*", "/dev/nvidia-modeset")
NVMM_MARKERS = ("nvarguscamerasrc", "nvvidconv", "nvv4l2", "memory:NVMM")
HIDDEN_BY_PROTECT_HOME = ("/home/", "/root/", "/run/user/")
# PrivateTmp=yes gives the service its own empty /tmp and /var/tmp.
HIDDEN_BY_PRIVATE_TMP = ("/tmp/", "/var/tmp/")
# Name heuristics when a node does not exist at install time (the group as /proc/devices names it).
NAME_CLASSES = (("/dev/video", "video4linux"), ("/dev/v4l/", "video4linux"), ("/dev/ttyUSB", "ttyUSB"),
                ("/dev/ttyACM", "ttyACM"), ("/dev/ttyTHS", "ttyTHS"), ("/dev/ttyAMA", "ttyAMA"),
                ("/dev/ttyS", "ttyS"))


class InstallError(RuntimeError):
    """The service cannot be installed as asked; the message says why and what to do."""


@dataclass
class InstallOptions:
    root: Path = Path("/")
    user: str = "edgeqc"
    config: Path = CONFIG_PATH
    exec_path: str | None = None
    unit_template: Path = REPO_SYSTEMD / UNIT_NAME
    config_example: Path = REPO_SYSTEMD / "edgeqc.toml.example"
    device_allow: Literal["class", "path"] = "class"
    enable: bool = True
    now: bool = False
    dry_run: bool = False


@dataclass
class Step:
    """One install step: what it does, and the action (None = nothing to do)."""

    text: str
    run: Callable[[], None] | None = None
    detail: str = ""


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unit_text: str = ""


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def device_class(path: str, proc_devices: dict[int, str] | None = None) -> str | None:
    """``char-<group>`` for a device node (its major's name in ``/proc/devices``; by name when
    the node is absent), or None when unknown."""
    try:
        st = os.stat(path)
        if stat.S_ISCHR(st.st_mode):
            name = (proc_devices if proc_devices is not None else _proc_devices()).get(os.major(st.st_rdev))
            if name:
                return f"char-{name}"
    except OSError:
        pass
    for prefix, name in NAME_CLASSES:
        if path.startswith(prefix):
            return f"char-{name}"
    return None


def _gpu_needed(settings: Any) -> bool:
    m = settings.model
    engine = m.path.lower().endswith((".engine", ".plan"))
    return m.backend == "tensorrt" or (m.backend == "auto" and engine) or any(
        k in settings.camera.source for k in NVMM_MARKERS)


def device_allow_lines(settings: Any, mode: Literal["class", "path"] = "class",
                       proc_devices: dict[int, str] | None = None,
                       gpu_globs: Sequence[str] = GPU_NODE_GLOBS) -> tuple[list[str], list[str]]:
    """``(["DeviceAllow=… rw", …], warnings)`` for the devices the settings name."""
    specs: list[str] = []
    warnings: list[str] = []

    def add(path: str, what: str) -> None:
        if mode == "path":
            specs.append(path)
            return
        cls = device_class(path, proc_devices)
        if cls is None:
            specs.append(path)
            warnings.append(f"{what} {path}: device group unknown, allowing the exact node only")
        else:
            specs.append(cls)

    cam = camera_device(settings.camera.source)
    if cam:
        add(cam, "camera.source")
    ser = serial_device(settings.plc)
    if ser:
        if ser.startswith("/dev/serial/by-id/") and not os.path.exists(ser) and mode == "class":
            specs += ["char-ttyUSB", "char-ttyACM"]  # a by-id link of an absent adapter: USB or ACM
        else:
            add(ser, "plc.port")
    if settings.plc.enabled and settings.plc.port == "demo":
        specs.append("char-pts")  # the built-in PLC simulator talks over a pseudo-terminal pair
    if _gpu_needed(settings):
        nodes = sorted({p for g in gpu_globs for p in glob.glob(g)})
        if not nodes:
            warnings.append("TensorRT/NVMM needs the GPU device nodes, but none were found (/dev/nvhost-*, "
                            "/dev/nvmap, /dev/nvidia*): run install-service on the device itself, else "
                            "DevicePolicy=closed blocks the GPU")
        for n in nodes:
            cls = device_class(n, proc_devices) if mode == "class" else None
            specs.append(cls or n)
        if any(os.path.basename(n).startswith("nvidia") for n in nodes) and mode == "class":
            specs.append("char-nvidia-uvm")  # created on first CUDA use on discrete GPUs
    lines = [f"DeviceAllow={s} rw" for s in dict.fromkeys(specs)]
    return lines, warnings


def render_unit(template: str, *, exec_start: str, device_allow: Sequence[str], read_write: Sequence[str],
                extra_unit: Sequence[str] = (), extra_service: Sequence[str] = ()) -> str:
    """The unit text with ExecStart=, DeviceAllow= and ReadWritePaths= replaced (see module doc).

    Raises:
        InstallError: the template lacks an ExecStart=, DeviceAllow= or ReadWritePaths= line.
    """
    out: list[str] = []
    seen = {"ExecStart": False, "DeviceAllow": False, "ReadWritePaths": False}
    section = ""
    for line in template.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
        if line.startswith("["):
            if section == "[Unit]":
                out[_last_content(out):_last_content(out)] = list(extra_unit)
            section = line.strip()
        if key == "ExecStart":
            seen["ExecStart"] = True
            out.append(f"ExecStart={exec_start}")
        elif key == "DeviceAllow":
            if not seen["DeviceAllow"]:
                seen["DeviceAllow"] = True
                out.extend(device_allow)
                out.extend(extra_service)
        elif key == "ReadWritePaths":
            seen["ReadWritePaths"] = True
            out.append("ReadWritePaths=" + " ".join(read_write))
        else:
            out.append(line)
    missing = [k for k, v in seen.items() if not v]
    if missing:
        raise InstallError(f"unit template lacks {', '.join(k + '=' for k in missing)} lines to fill in")
    return "\n".join(out) + "\n"


def _last_content(lines: list[str]) -> int:
    """Index after the last non-blank line (insert section additions before trailing blanks)."""
    i = len(lines)
    while i and not lines[i - 1].strip():
        i -= 1
    return i


def _quote_exec(path: str) -> str:
    if any(c.isspace() or c in "\"'\\" for c in path):
        raise InstallError(f"ExecStart path {path!r} contains spaces or quotes; install edgeqc in a plain path "
                           "such as /opt/edgeqc/venv")
    return path


def default_exec() -> str:
    """The ``edgeqc`` script beside the running interpreter (the venv's), else the one on PATH."""
    cand = Path(sys.executable).parent / "edgeqc"
    if cand.is_file():
        return str(cand)
    found = shutil.which("edgeqc")
    if found:
        return str(Path(found).resolve())
    raise InstallError("no installed `edgeqc` command found next to this Python or on PATH: "
                       "`pip install .` into the service venv (e.g. /opt/edgeqc/venv) or pass --exec PATH")


def _hidden(path: str) -> str | None:
    """Why the unit cannot see ``path`` (None when it can)."""
    if any(path.startswith(p) for p in HIDDEN_BY_PROTECT_HOME):
        return "is under /home, /root or /run/user, which the unit hides (ProtectHome=yes)"
    if any(path.startswith(p) for p in HIDDEN_BY_PRIVATE_TMP):
        return "is under /tmp or /var/tmp, which the unit replaces with its own empty folders (PrivateTmp=yes)"
    return None


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"`{shlex.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def _exists(kind: Literal["user", "group"], name: str) -> bool:
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
        return True
    except KeyError:
        return False


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def plan_install(opts: InstallOptions) -> Plan:
    """Work out every step (nothing is changed here).

    Raises:
        InstallError: template/example missing, ExecStart path hidden by ProtectHome= or PrivateTmp=, or
            the config invalid (message from :class:`edge.settings.ConfigError`).
    """
    from edge.settings import ConfigError, load_settings

    root, live = opts.root, opts.root == Path("/")
    plan = Plan()
    for f in (opts.unit_template, opts.config_example):
        if not f.is_file():
            raise InstallError(f"{f} not found: run from a checkout of edgeqc, or pass --unit-template and "
                               "--config-example")
    exec_path = opts.exec_path or default_exec()
    if not exec_path.startswith("/"):
        raise InstallError(f"--exec {exec_path}: must be an absolute path")
    hidden = _hidden(exec_path)
    if hidden:
        raise InstallError(f"{exec_path} {hidden}: install edgeqc elsewhere, e.g. "
                           "`sudo python3 -m venv --system-site-packages /opt/edgeqc/venv && "
                           "sudo /opt/edgeqc/venv/bin/pip install .`, then pass --exec /opt/edgeqc/venv/bin/edgeqc")

    config_dst = _under(root, opts.config)
    config_src = config_dst if config_dst.is_file() else opts.config_example
    try:
        settings = load_settings(config_src)
    except ConfigError as exc:
        raise InstallError(f"{config_src}: {exc}") from None

    def cmd_step(text: str, cmd: list[str]) -> None:
        if live:
            plan.steps.append(Step(f"{text}: {shlex.join(cmd)}", lambda: _run(cmd)))
        else:
            plan.steps.append(Step(f"{text}: {shlex.join(cmd)} (not run with --root)"))

    # 1. groups and user
    for g in GROUPS:
        if live and not _exists("group", g):
            cmd_step(f"create group {g}", ["groupadd", "--system", g])
    if live and _exists("user", opts.user):
        cmd_step(f"user {opts.user} exists; add it to {' and '.join(GROUPS)}",
                 ["usermod", "--append", "--groups", ",".join(GROUPS), opts.user])
    else:
        cmd_step(f"create system user {opts.user}",
                 ["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR), "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--groups", ",".join(GROUPS),
                  "--comment", "edgeqc inspection service", opts.user])

    # 2. folders
    archive = Path(settings.archive.path)
    if not archive.is_absolute():
        archive = STATE_DIR / archive  # the unit's WorkingDirectory
    folders = [(STATE_DIR, 0o750, True), (opts.config.parent, 0o755, False)]
    if settings.archive.enabled:
        folders.append((archive, 0o750, True))
    for folder, mode, owned in folders:
        dst = _under(root, folder)

        def mk(dst: Path = dst, mode: int = mode, owned: bool = owned) -> None:
            dst.mkdir(parents=True, exist_ok=True)
            os.chmod(dst, mode)
            if owned and live:
                _chown(dst, opts.user)

        state = "exists" if dst.is_dir() else "create"
        owner = (f", owner {opts.user}" if live else ", chown not run with --root") if owned else ""
        plan.steps.append(Step(f"{state} folder {dst} (mode {mode:o}{owner})", mk))

    # 3. config
    if config_dst.is_file():
        plan.steps.append(Step(f"keep existing config {config_dst}"))
    else:
        def cp() -> None:
            config_dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(opts.config_example, config_dst)
            os.chmod(config_dst, 0o640)
            if live:
                os.chown(config_dst, 0, pwd.getpwnam(opts.user).pw_gid)

        plan.steps.append(Step(f"write config {config_dst} from {opts.config_example} (mode 640, group {opts.user})",
                               cp))
    for name, value in (("model.path", settings.model.path), ("archive.path", str(archive))):
        hidden = _hidden(value)
        if hidden:
            plan.warnings.append(f"{name} = {value} {hidden}, so the service cannot see it: move it, e.g. to "
                                 "/var/lib/edgeqc")

    # 4. unit
    allow, warn = device_allow_lines(settings, opts.device_allow)
    plan.warnings += warn
    rw = [str(STATE_DIR)]
    if settings.archive.enabled and not archive.is_relative_to(STATE_DIR):
        rw.append(f"-{archive}")  # '-': a missing mount does not stop the line; archive errors are counted
    extra_unit: list[str] = []
    extra_service: list[str] = []
    if "nvarguscamerasrc" in settings.camera.source:
        # Argus clients talk to nvargus-daemon over /tmp/argus_socket; PrivateTmp= hides the host /tmp.
        extra_unit = ["After=nvargus-daemon.service", "Wants=nvargus-daemon.service", "PartOf=nvargus-daemon.service"]
        extra_service = ["BindPaths=/tmp/argus_socket"]
    config_arg = _quote_exec(str(opts.config))
    plan.unit_text = render_unit(opts.unit_template.read_text(),
                                 exec_start=f"{_quote_exec(exec_path)} run --config {config_arg}",
                                 device_allow=allow, read_write=rw, extra_unit=extra_unit, extra_service=extra_service)
    unit_dst = _under(root, Path("/etc/systemd/system") / UNIT_NAME)

    def write_unit() -> None:
        unit_dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = unit_dst.with_name(unit_dst.name + ".tmp")
        tmp.write_text(plan.unit_text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, unit_dst)

    old = unit_dst.read_text() if unit_dst.is_file() else None
    state = "write" if old is None else ("unchanged" if old == plan.unit_text else "update")
    plan.steps.append(Step(f"{state} unit {unit_dst}", write_unit if state != "unchanged" else None,
                           detail=plan.unit_text))

    # 5. systemd
    cmd_step("reload systemd", ["systemctl", "daemon-reload"])
    if opts.enable:
        cmd_step("enable at boot" + (" and start now" if opts.now else ""),
                 ["systemctl", "enable", *(["--now"] if opts.now else []), UNIT_NAME])
    return plan


def install(opts: InstallOptions, out: Callable[[str], Any] = print) -> int:
    """Carry out (or, with ``dry_run``, print) the plan; returns a process exit code.

    Raises:
        InstallError: see :func:`plan_install`; or a step failed (message names the command).
    """
    if opts.root == Path("/") and not opts.dry_run and os.geteuid() != 0:
        raise InstallError("install-service changes /etc and creates a user: run it with sudo "
                           "(or --dry-run to see the steps, --root DIR to write into a folder)")
    plan = plan_install(opts)
    out(f"edgeqc install-service{' (dry run: nothing is changed)' if opts.dry_run else ''}, root {opts.root}")
    for i, step in enumerate(plan.steps, 1):
        out(f"  {i}. {step.text}")
        if opts.dry_run and step.detail:
            out("\n".join("       | " + ln for ln in step.detail.rstrip("\n").splitlines()))
        if not opts.dry_run and step.run is not None:
            step.run()
    for w in plan.warnings:
        out(f"  WARNING: {w}")
    if opts.root == Path("/") and not opts.dry_run:
        out(f"Next: put the model at the configured model.path, check with "
            f"`sudo -u {opts.user} {opts.exec_path or default_exec()} preflight --config {opts.config}`, then "
            f"`sudo systemctl start edgeqc` and `journalctl -u edgeqc -f`.")
    return 0
