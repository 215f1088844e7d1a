"""Running under systemd: sd_notify messages and the start-up preflight check.

:class:`Notifier` sends the ``Type=notify`` protocol messages (sd_notify(3)) through the maintained
``sdnotify`` package: ``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``RELOADING=1`` with
``MONOTONIC_USEC=`` (systemd 253+ requires the monotonic time in the same message for
``Type=notify-reload`` reload cycles; older versions ignore the field), ``STOPPING=1`` and
``EXTEND_TIMEOUT_USEC=``. Without ``NOTIFY_SOCKET`` (run by hand) every call is a no-op.

:func:`preflight` checks, before the service opens anything, what would otherwise fail later with
a less helpful error: device nodes (camera, serial port) missing or not readable/writable by the
service user, the unit's ``DeviceAllow=`` not covering them, the model/engine missing, unreadable
or not matching its labels/sidecar, the archive folder not writable. Every :class:`Problem` names
the setting, the exact problem and the fix.
"""

from __future__ import annotations

import fnmatch
import grp
import hashlib
import logging
import os
import pwd
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("edgeqc.service")

UNIT_PATH = Path("/etc/systemd/system/edgeqc.service")
ENGINE_SUFFIXES = (".engine", ".plan")


# ====================================================================== sd_notify
class Notifier:
    """sd_notify sender; every method is a no-op (returns False) when ``NOTIFY_SOCKET`` is unset.

    Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from the environment when
    created (sdnotify reads ``NOTIFY_SOCKET`` itself when it connects).

    Args:
        clock: monotonic clock in seconds (watchdog rate limiting).

    Thread-safe: the loop pings the watchdog while the reload thread sends RELOADING/READY.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self._clock = clock
        self._lock = threading.Lock()
        self._sd: Any = None
        self._last_ping: float | None = None
        self.watchdog_usec = _watchdog_usec(env)
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens (``NOTIFY_SOCKET`` set)."""
        return self.socket_path is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC`` (sd_watchdog_enabled(3)
        recommends pinging at half the timeout); None when the watchdog is off."""
        return None if not self.watchdog_usec else self.watchdog_usec / 2e6

    def notify(self, *assignments: str) -> bool:
        """Send one datagram with ``assignments`` joined by newlines; True if it was sent.

        sdnotify connects its socket once; if PID 1 re-executes (``systemctl daemon-reexec``,
        e.g. after a systemd upgrade) that connection goes stale, so a failed send reconnects once
        and retries — a months-long run must keep its watchdog pings arriving.
        """
        if not self.enabled:
            return False
        text = "\n".join(assignments)
        err: Exception | None = None
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._sd is None or attempt:
                        self._sd = _new_notifier()
                    self._sd.notify(text)
                    self.sent += 1
                    return True
                except (OSError, TypeError) as exc:  # TypeError: NOTIFY_SOCKET unset since (sdnotify)
                    err = exc
            self.failed += 1
        log.warning("sd_notify to %s failed: %s", self.socket_path, err)
        return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (start-up or reload finished), optionally with a ``STATUS=`` line."""
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` + ``MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>`` in one message; send
        :meth:`ready` when the reload is done (also when it failed and the old model stays)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown (drain) has begun."""
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=<one line>`` shown by ``systemctl status``."""
        return self.notify(*_status(text))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: the current start/stop step needs up to ``seconds`` more."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self, force: bool = False) -> bool:
        """``WATCHDOG=1`` if the watchdog is on and half its interval has passed since the last
        ping (or ``force``). Cheap to call every loop turn; returns True when a ping was sent."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return False
        now = self._clock()
        if not force and self._last_ping is not None and now - self._last_ping < interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")


def _status(text: str | None) -> list[str]:
    if text is None:
        return []
    return ["STATUS=" + " ".join(text.split())]  # one line: newlines would start new assignments


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` if it is meant for this process (``WATCHDOG_PID`` unset or our pid)."""
    raw = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not raw or (pid and pid != str(os.getpid())):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    return usec if usec > 0 else None


def _new_notifier() -> Any:
    import sdnotify

    return sdnotify.SystemdNotifier(debug=True)  # debug: raise send errors so we can reconnect


def status_line(status: Mapping[str, Any]) -> str:
    """One-line ``STATUS=`` text from ``Inspector.status()``:
    ``"42.0 parts/min, 3 rejects of 120, camera ok, PLC ok, model ok"``."""
    return (f"{status.get('parts_per_min', 0)} parts/min, {status.get('rejects', 0)} rejects of "
            f"{status.get('parts', 0)}, camera {status.get('camera', '?')}, PLC {status.get('plc', '?')}, "
            f"model {status.get('model', '?')}")


# ====================================================================== preflight
@dataclass(frozen=True)
class Problem:
    """One preflight finding: ``field`` (settings path or ``unit``), what is wrong, how to fix it."""

    field: str
    problem: str
    fix: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.field}: {self.problem}. Fix: {self.fix}"


@dataclass(frozen=True)
class Identity:
    """Whom the checks are for: user name, uid and every group id (primary + supplementary)."""

    name: str
    uid: int
    gids: frozenset[int]
    current: bool = False

    @classmethod
    def of_process(cls) -> Identity:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getegid(), *os.getgroups()}), current=True)

    @classmethod
    def of_user(cls, name: str, extra_groups: Iterable[str] = ()) -> Identity:
        """The user's groups from the user database, plus ``extra_groups`` (what the unit's
        ``SupplementaryGroups=`` adds; missing group names are ignored).

        Raises:
            KeyError: no such user.
        """
        pw = pwd.getpwnam(name)
        gids = set(os.getgrouplist(name, pw.pw_gid))
        for g in extra_groups:
            try:
                gids.add(grp.getgrnam(g).gr_gid)
            except KeyError:
                pass
        return cls(name, pw.pw_uid, frozenset(gids))


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _may(path: Path, st: os.stat_result, who: Identity, mode: int) -> bool:
    """Whether ``who`` has ``mode`` (os.R_OK|W_OK|X_OK bits) on ``path``. For this process the
    kernel decides (``os.access``: ACLs included); for another user, the owner/group/other bits."""
    if who.current:
        return os.access(path, mode)
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in who.gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & mode == mode


def camera_device(source: str) -> str | None:
    """The V4L2 device node a ``camera.source`` opens: ``"0"`` -> ``/dev/video0``, a ``/dev/…``
    path, or ``device=/dev/…`` inside a GStreamer pipeline; None for files, URLs and ``demo``."""
    s = source.strip()
    if s.isdigit():
        return f"/dev/video{int(s)}"
    if s.startswith("/dev/"):
        return s
    m = re.search(r"device=(/dev/[^\s!]+)", s)
    return m.group(1) if m else None


def serial_port_path(plc: Any) -> str | None:
    """``plc.port`` when it names a file system path that pyserial opens as a device, wherever it
    lives (``/dev/ttyUSB0``, a socat ``link=/tmp/ttyV0``); None for ``demo``, pyserial URLs
    (anything with ``://``: ``loop://``, ``socket://``, ``rfc2217://``; pyserial 3.5
    ``serial_for_url``) and a disabled PLC."""
    port = str(plc.port)
    return port if plc.enabled and port != "demo" and "://" not in port else None


def serial_device(plc: Any) -> str | None:
    """The serial device node of ``plc.port`` under ``/dev`` (for the unit's ``DeviceAllow=``), else None."""
    path = serial_port_path(plc)
    return path if path is not None and path.startswith("/dev/") else None


def _file_kind(mode: int) -> str:
    """``"regular file"``, ``"directory"``, … for an ``st_mode``."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return f"file of mode {stat.filemode(mode)}"


_SYSFS_CHAR = Path("/sys/dev/char")  # MAJOR:MINOR -> the device's sysfs folder (sysfs-rules)


def _is_tty(path: str, st: os.stat_result) -> bool | None:
    """Whether the character device ``path`` (its ``st``) is a terminal (serial port, pty); None =
    cannot tell (cannot be opened, e.g. no permission: the permission check reports that).

    Asks sysfs first (``/sys/dev/char/MAJOR:MINOR/subsystem`` is ``…/class/tty`` for every tty
    driver: ttyS, ttyUSB, ttyACM, ttyTHS, …), so a device whose open has side effects (e.g.
    ``/dev/watchdog`` arms the watchdog) is never opened. Devices without a sysfs entry (pty
    slaves ``/dev/pts/N``, a system without sysfs) are opened ``O_RDWR|O_NOCTTY|O_NONBLOCK``
    and tested with ``isatty`` (``tcgetattr`` succeeds), then closed; a socat or ``os.openpty``
    pty survives this. Sources: sysfs-rules / sysfs(5) ``/sys/dev/char``; open(2); isatty(3)."""
    sysfs = _SYSFS_CHAR / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" / "subsystem"
    try:
        return os.path.basename(os.readlink(sysfs)) == "tty"
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


_PYSERIAL_URLS = "a pyserial URL (socket://HOST:PORT, rfc2217://HOST:PORT)"


def _serial_fix(field: str) -> str:
    return (f"set {field} to the adapter's node (`ls -l /dev/serial/by-id/`), a pyserial URL, "
            "or \"demo\" for the built-in PLC simulator")


def _check_device(field: str, path: str, kind: str, group_hint: str, who: Identity) -> list[Problem]:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        where = ("`v4l2-ctl --list-devices` or `ls -l /dev/video*`" if kind == "camera"
                 else "`ls -l /dev/serial/by-id/` (a by-id path survives re-plugging)")
        return [Problem(field, f"{kind} device {path} does not exist",
                        f"check the cable and driver, list devices with {where}, and set {field} to an existing node")]
    except OSError as exc:
        return [Problem(field, f"cannot stat {kind} device {path}: {exc.strerror}",
                        f"check the permissions of the folders above {path}")]
    if kind == "serial":
        real = os.path.realpath(path)
        shown = path if real == path else f"{path} (-> {real})"
        if not stat.S_ISCHR(st.st_mode):
            return [Problem(field, f"{shown} is a {_file_kind(st.st_mode)}, not a serial port: expected a serial "
                                   f"device (character device such as /dev/ttyUSB0) or {_PYSERIAL_URLS}",
                            _serial_fix(field))]
        # /dev/null, /dev/zero, …: pyserial opens them but fails to configure them, and the link
        # would retry the port forever
        if _is_tty(path, st) is False:
            return [Problem(field, f"{shown} is a character device but not a serial port (not a tty): expected "
                                   f"a serial device (such as /dev/ttyUSB0) or {_PYSERIAL_URLS}", _serial_fix(field))]
    if not stat.S_ISCHR(st.st_mode):
        return [Problem(field, f"{path} is not a character device node (mode {stat.filemode(st.st_mode)})",
                        f"set {field} to the {kind}'s /dev node")]
    if _may(p, st, who, os.R_OK | os.W_OK):
        return []
    group = _group_name(st.st_gid)
    mode = stat.filemode(st.st_mode)
    owner = f"{_user_name(st.st_uid)}:{group}"
    if st.st_mode & 0o060 == 0o060 and group != "root":
        fix = (f"add the user to group '{group}': `sudo usermod -aG {group} {who.name}` (log in again); "
               f"the service gets it from SupplementaryGroups= in edgeqc.service (video dialout)")
    else:
        fix = (f"give group '{group_hint}' read/write access with a udev rule, e.g. "
               f"KERNEL==\"{p.name}\", GROUP=\"{group_hint}\", MODE=\"0660\" in "
               f"/etc/udev/rules.d/70-edgeqc.rules, then `sudo udevadm trigger`")
    return [Problem(field, f"{kind} device {path} ({mode} {owner}) is not readable and writable by user "
                           f"{who.name}", fix)]


def _proc_devices(proc_devices: Path = Path("/proc/devices")) -> dict[int, str]:
    """Character device majors -> group names (``/proc/devices``)."""
    out: dict[int, str] = {}
    try:
        lines = proc_devices.read_text().splitlines()
    except OSError:
        return out
    in_char = False
    for line in lines:
        if line.startswith("Character devices"):
            in_char = True
        elif line.startswith("Block devices"):
            in_char = False
        elif in_char and line.strip():
            major, _, name = line.strip().partition(" ")
            if major.isdigit():
                out.setdefault(int(major), name.strip())
    return out


def read_unit_device_policy(unit: Path) -> tuple[str | None, list[str]]:
    """``(DevicePolicy, [DeviceAllow specifiers])`` of a unit file (last DevicePolicy wins)."""
    policy: str | None = None
    allow: list[str] = []
    section = None
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key == "DevicePolicy":
            policy = value
        elif key == "DeviceAllow":
            if value:
                allow.append(value.split()[0])
            else:
                allow.clear()
    return policy, allow


def device_allowed(path: str, allow: Iterable[str], proc_devices: Mapping[int, str] | None = None) -> bool:
    """Whether a ``DeviceAllow=`` list covers the char device at ``path`` (same node, or a
    ``char-<group>`` glob matching its major's name in ``/proc/devices``)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    names = proc_devices if proc_devices is not None else _proc_devices()
    group = names.get(os.major(st.st_rdev))
    for spec in allow:
        if spec.startswith("char-"):
            if group is not None and fnmatch.fnmatchcase(group, spec[5:]):
                return True
        elif spec.startswith("/dev/"):
            try:
                if os.stat(spec).st_rdev == st.st_rdev and stat.S_ISCHR(os.stat(spec).st_mode):
                    return True
            except OSError:
                continue
    return False


def _check_unit(unit: Path, devices: list[tuple[str, str]]) -> list[Problem]:
    try:
        policy, allow = read_unit_device_policy(unit)
    except OSError as exc:
        return [Problem("unit", f"cannot read {unit}: {exc.strerror}", "check the file's permissions",
                        "warning")]
    if policy not in ("closed", "strict"):
        return []
    out = []
    for field, path in devices:
        if Path(path).exists() and not device_allowed(path, allow):
            out.append(Problem(field, f"{path} is not in the DeviceAllow= list of {unit} "
                                      f"(DevicePolicy={policy}), so the service cannot open it",
                               "run `sudo edgeqc install-service` again after changing camera.source or "
                               "plc.port (it fills DeviceAllow= from the config)"))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_engine(path: Path) -> list[Problem]:
    """Engine checks that need no deserialization: ``edge.backends.tensorrt.check_engine_file``
    (sidecar, plan hash, TensorRT version when it imports, compute capability when a GPU is
    there); without that module, the sidecar and plan hash only."""
    from edge.backends.engine_sidecar import EngineCompatError, read_sidecar

    fix = "rebuild the engine on this device with `edgeqc build`"
    try:
        from edge.backends.tensorrt import check_engine_file
    except ImportError:
        check_engine_file = None  # type: ignore[assignment]
    try:
        if check_engine_file is not None:
            messages = [str(m) for m in check_engine_file(path)]
        else:
            side = read_sidecar(path)
            want, have = side.get("plan_sha256"), _sha256(path)
            messages = []
            if want and str(want).lower() != have:
                messages.append(f"plan sha256 mismatch: sidecar records {str(want)[:16]}…, the plan file hashes "
                                f"to {have[:16]}… (plan replaced or corrupted, or sidecar of another engine)")
    except EngineCompatError as exc:
        return [Problem("model.path", str(exc), fix)]
    return [Problem("model.path", f"engine {path}: {m}", fix) for m in dict.fromkeys(messages)]


def _check_model(settings: Any, who: Identity) -> list[Problem]:
    m = settings.model
    if m.path == "demo":
        from edge.app import DEMO_MODEL

        m = m.model_copy(update={"path": str(DEMO_MODEL)})
    path = Path(m.path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return [Problem("model.path", f"{path} does not exist",
                        "copy the model/engine there or correct model.path (absolute paths; the service's "
                        "working directory is /var/lib/edgeqc)")]
    except OSError as exc:
        return [Problem("model.path", f"cannot stat {path}: {exc.strerror}",
                        "make the folders above it searchable by the service user")]
    if not stat.S_ISREG(st.st_mode):
        return [Problem("model.path", f"{path} is not a regular file", "point model.path at the .onnx or .engine file")]
    if not _may(path, st, who, os.R_OK):
        return [Problem("model.path", f"{path} ({stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:"
                                      f"{_group_name(st.st_gid)}) is not readable by user {who.name}",
                        f"`sudo chgrp {who.name} {path} && sudo chmod g+r {path}`")]
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if m.backend == "onnxruntime" and is_engine:
        return [Problem("model.backend", f"backend onnxruntime cannot load the TensorRT engine {path.name}",
                        "set model.backend = \"tensorrt\" (or \"auto\"), or point model.path at the .onnx model")]
    if m.backend == "tensorrt" and not is_engine:
        return [Problem("model.backend", f"backend tensorrt loads a serialized engine (.engine/.plan), "
                                         f"not {path.name}",
                        "build an engine on this device with `edgeqc build` and point model.path at it, or "
                        "set model.backend = \"onnxruntime\"")]
    out: list[Problem] = []
    if not is_engine and m.intra_op_threads:
        from edge.backends.onnxruntime import default_intra_op_threads, usable_cpus

        cpus = usable_cpus()
        if m.intra_op_threads > cpus:
            out.append(Problem("model.intra_op_threads",
                               f"{m.intra_op_threads} is more than the {cpus} CPUs this process may use "
                               f"(the runtime uses {cpus}: more threads than cores make every model call wait)",
                               f"set 0 (auto: {default_intra_op_threads(cpus)} here) or at most {cpus}", "warning"))
    if is_engine:
        out += _check_engine(path)
        if out:
            return out
    try:
        from edge.model_spec import ModelSpecError, resolve_spec

        try:
            spec = resolve_spec(path, m)
            from edge.decision import DecisionError, check_decision_settings

            try:
                check_decision_settings(settings.decision, spec.labels)
            except DecisionError as exc:
                out.append(Problem("decision", str(exc), "name pass classes among the model's labels"))
        except (ModelSpecError, FileNotFoundError) as exc:
            out.append(Problem("model", str(exc), "fix the model metadata, labels.txt or the [model] settings "
                                                  "named in the message"))
        except Exception as exc:  # noqa: BLE001  (a corrupt file raises whatever its parser raises)
            out.append(Problem("model.path", f"{path} cannot be read as a model: {type(exc).__name__}: {exc}",
                               "replace the file with an intact copy (compare its sha256)"))
    except ImportError:
        pass
    return out


def _check_archive(settings: Any, who: Identity) -> list[Problem]:
    a = settings.archive
    if not a.enabled:
        return []
    path = Path(a.path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        st = probe.stat()
    except OSError as exc:
        return [Problem("archive.path", f"cannot stat {probe}: {exc.strerror}", "fix archive.path")]
    if not stat.S_ISDIR(st.st_mode):
        return [Problem("archive.path", f"{probe} is not a folder, so {path} cannot be used as archive",
                        "set archive.path to a folder (default for the service: /var/lib/edgeqc/archive)")]
    if not _may(probe, st, who, os.W_OK | os.X_OK):
        what = f"archive folder {path}" if probe == path else f"{probe} (where the archive folder {path} would be created)"
        return [Problem("archive.path", f"{what} is not writable by user {who.name} "
                                        f"({stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:{_group_name(st.st_gid)})",
                        f"`sudo install -d -o {who.name} -g {who.name} -m 0750 {path}`; under systemd the folder "
                        f"must also be in ReadWritePaths= (edgeqc install-service adds it)")]
    out: list[Problem] = []
    try:
        vfs = os.statvfs(probe)
        size = vfs.f_blocks * vfs.f_frsize
        if 0 < size < a.max_bytes:
            out.append(Problem("archive.max_bytes", f"{a.max_bytes} bytes is more than the whole filesystem of "
                                                    f"{probe} ({size} bytes): the archive will run it full",
                               "lower archive.max_bytes below the free space you can spare (a full disk is "
                               "handled, oldest first, but other programs need space too)", "warning"))
    except OSError:
        pass
    return out


def preflight(
    settings: Any,
    *,
    user: str | Identity | None = None,
    extra_groups: Iterable[str] = ("video", "dialout"),
    unit_path: Path | None = UNIT_PATH,
) -> list[Problem]:
    """Check the station's devices, model and archive before starting.

    Args:
        settings: the :class:`edge.settings.Settings` tree.
        user: check for this user (e.g. ``"edgeqc"``, with ``extra_groups`` as the unit's
            ``SupplementaryGroups=``), or an :class:`Identity`; None = this process (what the
            service does at start).
        extra_groups: groups the unit adds (only used with ``user``).
        unit_path: installed unit whose ``DeviceAllow=`` must cover the devices; None or a missing
            file skips that check.

    Returns:
        Problems, errors first (empty = go). Never raises for what it checks.

    Raises:
        KeyError: ``user`` names no user.
    """
    if isinstance(user, Identity):
        who = user
    else:
        who = Identity.of_process() if user is None else Identity.of_user(user, extra_groups)
    problems: list[Problem] = []
    devices: list[tuple[str, str]] = []
    cam = camera_device(settings.camera.source)
    if cam is not None:
        devices.append(("camera.source", cam))
        problems += _check_device("camera.source", cam, "camera", "video", who)
    else:
        src = settings.camera.source
        if src != "demo" and "://" not in src and "!" not in src and not Path(src).exists():
            problems.append(Problem("camera.source", f"{src} does not exist (not a device, URL or pipeline, so "
                                                     "it must be a folder or video file)",
                                    "set camera.source to an existing folder, video file, /dev/videoN, URL or "
                                    "GStreamer pipeline"))
    ser = serial_port_path(settings.plc)
    if ser is not None:
        devices.append(("plc.port", ser))
        problems += _check_device("plc.port", ser, "serial", "dialout", who)
    elif settings.plc.enabled and str(settings.plc.port).lower().startswith("loop://"):
        # pyserial's loop:// echoes every byte back: the station would read its own HBT as a
        # malformed PLC telegram, NAK it, read the NAK back, NAK that ... without end
        problems.append(Problem("plc.port", "loop:// echoes every telegram the station sends back to the "
                                            "station itself (it would NAK its own heartbeats without end): "
                                            "expected a serial device, socket://HOST:PORT, rfc2217://HOST:PORT "
                                            "or demo",
                                "set plc.port to the PLC's serial port, or \"demo\" for the built-in PLC simulator"))
    if unit_path is not None and unit_path.is_file():
        problems += _check_unit(unit_path, devices)
    problems += _check_model(settings, who)
    problems += _check_archive(settings, who)
    return sorted(problems, key=lambda p: p.severity != "error")
