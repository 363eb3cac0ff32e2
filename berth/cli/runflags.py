"""podman's ``run``/``create`` flags beyond the basics: ``--label``, ``--env-file``,
``--entrypoint``, ``--init``, ``--cap-add``/``--cap-drop``, ``--ulimit``,
``--security-opt seccomp=unconfined``, ``--log-opt max-size=SIZE``. Parsed here into
run-spec options; the worker checks them again with the same rules (``engine.containers.spec``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.containers.spec import parse_log_size
from engine.errors import InvalidArgument


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label on the container (repeatable; ps --filter label=KEY[=VALUE])")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read KEY=VALUE lines into the environment (repeatable; -e wins)")
    p.add_argument("--entrypoint", metavar="CMD|JSON",
                   help="run this before the arguments: a path, or a JSON list such as "
                        "'[\"sh\", \"-c\"]'")
    p.add_argument("--init", action="store_true",
                   help="run catatonit as PID 1: it reaps zombies and forwards signals")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="add a capability (NET_ADMIN or CAP_NET_ADMIN, or ALL); repeatable")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="drop a capability (or ALL); repeatable")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="a resource limit such as nofile=1024:2048 (-1: unlimited); "
                        "repeatable. Default nofile and nproc as podman's")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="seccomp=unconfined: no seccomp filter (default: podman's "
                        "profile); no-new-privileges; label=disable (berth never labels)")
    for flag, what in (("--pid", "processes"), ("--ipc", "System V IPC and POSIX queues"),
                       ("--uts", "host and domain names")):
        p.add_argument(flag, metavar="host|private",
                       help=f"host: share the host's namespace of {what}; private (default): "
                            "the container's own")
    p.add_argument("--log-driver", metavar="k8s-file",
                   help="k8s-file: the log conmon writes for every container (berth's only "
                        "driver; others are refused)")
    p.add_argument("--log-opt", action="append", default=[], metavar="max-size=SIZE",
                   help="max-size=10m: conmon truncates the container's log when it would "
                        "grow past SIZE (k, m, g are 1000s, as podman's). Default: no limit, "
                        "as podman's")


def run_flag_spec(args: argparse.Namespace, env: list[str]) -> dict[str, Any]:
    """The run-spec options of these flags; ``env`` (from ``-e``) wins over env files."""
    spec: dict[str, Any] = {}
    from_files: list[str] = []
    if args.env_file or args.cap_add or args.cap_drop or args.ulimit:
        # the process rules, loaded only when these flags are given (start-up cost)
        from engine.containers.process import (
            normalize_cap,
            parse_env_file,
            parse_ulimit,
            read_env_file,
        )
    for path in args.env_file:
        from_files += parse_env_file(read_env_file(path, f"env file {path}"), path)
    if from_files:
        spec["env"] = [*from_files, *env]
    labels: dict[str, str] = {}
    for item in args.label:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label {item!r}: use KEY=VALUE")
        labels[key] = value
    if labels:
        spec["labels"] = labels
    if args.entrypoint is not None:
        spec["entrypoint"] = _entrypoint(args.entrypoint)
    if args.init:
        spec["init"] = True
    if args.cap_add:
        spec["cap_add"] = [normalize_cap(c) for c in args.cap_add]
    if args.cap_drop:
        spec["cap_drop"] = [normalize_cap(c) for c in args.cap_drop]
    if args.ulimit:
        spec["ulimits"] = [list(parse_ulimit(u)) for u in args.ulimit]
    for opt in args.security_opt:
        if opt in ("seccomp=unconfined", "seccomp:unconfined"):
            spec["seccomp"] = "unconfined"
        elif opt in ("no-new-privileges", "no-new-privileges=true",
                     "no-new-privileges:true"):
            spec["no_new_privileges"] = True
        elif opt in ("no-new-privileges=false", "no-new-privileges:false"):
            spec["no_new_privileges"] = False
        elif opt in ("label=disable", "label:disable"):
            # podman: no SELinux label on the container. berth never labels one (no
            # SELinux policy is loaded where it runs), so this asks for what it does.
            pass
        else:
            raise InvalidArgument(f"unsupported --security-opt {opt!r}: berth knows "
                                  "seccomp=unconfined, no-new-privileges[=true|false] and "
                                  "label=disable")
    for flag in ("pid", "ipc", "uts"):
        value = getattr(args, flag)
        if value is None or value == "private":
            continue
        if value != "host":
            raise InvalidArgument(f"unsupported --{flag} {value!r}: berth knows host and "
                                  "private (sharing another container's namespace is not "
                                  "there yet)")
        spec[f"{flag}_ns"] = "host"
    if args.log_driver not in (None, "k8s-file"):
        raise InvalidArgument(f"unsupported --log-driver {args.log_driver!r}: berth's "
                              "containers log to conmon's k8s-file, the only driver it has")
    for opt in args.log_opt:
        key, sep, value = opt.partition("=")
        if key.strip() != "max-size" or not sep:
            raise InvalidArgument(f"unsupported --log-opt {opt!r}: berth knows max-size=SIZE")
        spec["log_size_max"] = parse_log_size(value)  # engine.containers.spec
    return spec


def _entrypoint(text: str) -> list[str]:
    """podman's forms: a JSON list, or one string (the empty string: no entrypoint)."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise InvalidArgument(f"invalid --entrypoint {text!r}: not a JSON list") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"invalid --entrypoint {text!r}: a JSON list of strings")
        return value
    return [text] if text else []
