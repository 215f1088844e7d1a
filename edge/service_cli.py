"""``edgeqc preflight`` and ``edgeqc install-service`` (registered by edge/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``preflight`` and ``install-service``; handlers are ``args.func(args) -> int``."""
    p = subparsers.add_parser(
        "preflight",
        help="check devices, model/engine and archive folder before starting the service",
        description=(
            "Check that the camera and serial port exist and are readable/writable by the service user, "
            "that the installed unit's DeviceAllow= covers them, that the model/engine exists and matches "
            "its labels/sidecar, and that the archive folder is writable. Prints one line per problem with "
            "its fix. Exit code 0 = no errors (warnings allowed), 1 = errors, 2 = invalid config."
        ),
    )
    p.add_argument("--config", help="TOML settings file (EDGEQC_* env vars override it)")
    p.add_argument("--user", default=None,
                   help="check for this user, with the unit's groups video and dialout "
                        "(default: the user running the command; as root pass --user edgeqc)")
    p.add_argument("--unit", default="/etc/systemd/system/edgeqc.service",
                   help="installed unit whose DeviceAllow= must cover the devices ('' = skip)")
    p.set_defaults(func=cmd_preflight)

    i = subparsers.add_parser(
        "install-service",
        help="install edgeqc as a systemd service: user, folders, config, unit, enable",
        description=(
            "Create the system user (groups video, dialout), /var/lib/edgeqc and the archive folder, "
            "/etc/edgeqc/edgeqc.toml from the example (an existing config is kept), write "
            "/etc/systemd/system/edgeqc.service with ExecStart= and DeviceAllow= filled from the config, then "
            "`systemctl daemon-reload` and `systemctl enable`. Run again after changing camera.source or "
            "plc.port. Needs root unless --dry-run or --root."
        ),
    )
    i.add_argument("--dry-run", action="store_true", help="print every step and the unit; change nothing")
    i.add_argument("--root", default="/", help="write under this folder instead of / and run no commands (tests)")
    i.add_argument("--user", default="edgeqc", help="service user (default edgeqc)")
    i.add_argument("--config", default="/etc/edgeqc/edgeqc.toml", help="config path the unit uses")
    i.add_argument("--exec", dest="exec_path", default=None,
                   help="edgeqc executable for ExecStart= (default: the one beside this Python, i.e. the venv's)")
    i.add_argument("--unit-template", default=None, help="unit template (default: systemd/edgeqc.service)")
    i.add_argument("--config-example", default=None, help="example config (default: systemd/edgeqc.toml.example)")
    i.add_argument("--device-allow", choices=("class", "path"), default="class",
                   help="DeviceAllow= by device group (survives re-plugging; default) or exact nodes only")
    i.add_argument("--no-enable", action="store_true", help="do not `systemctl enable` the unit")
    i.add_argument("--now", action="store_true", help="also start it now (`systemctl enable --now`)")
    i.set_defaults(func=cmd_install)


def cmd_preflight(args: argparse.Namespace) -> int:
    from edge.service import preflight
    from edge.settings import load_settings

    settings = load_settings(args.config)  # ConfigError -> exit 2 in edge/cli.py
    try:
        problems = preflight(settings, user=args.user, unit_path=Path(args.unit) if args.unit else None)
    except KeyError:
        print(f"edgeqc preflight: no user {args.user!r} (create it with `sudo edgeqc install-service`)",
              file=sys.stderr)
        return 1
    for pr in problems:
        print(pr)
    errors = sum(pr.severity == "error" for pr in problems)
    if not problems:
        print("preflight: OK")
    else:
        print(f"preflight: {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


def cmd_install(args: argparse.Namespace) -> int:
    from edge.service_install import InstallError, InstallOptions, install

    opts = InstallOptions(root=Path(args.root), user=args.user, config=Path(args.config), exec_path=args.exec_path,
                          device_allow=args.device_allow, enable=not args.no_enable, now=args.now,
                          dry_run=args.dry_run)
    if args.unit_template:
        opts.unit_template = Path(args.unit_template)
    if args.config_example:
        opts.config_example = Path(args.config_example)
    try:
        return install(opts)
    except InstallError as exc:
        print(f"edgeqc install-service: {exc}", file=sys.stderr)
        return 1
