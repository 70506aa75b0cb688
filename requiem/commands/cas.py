"""`requiem cas …`: the content-addressed store."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from requiem.commands import home_of, non_negative_int
from requiem.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from requiem.commands import Handler


def _cas(args: argparse.Namespace) -> Any:
    from requiem.cas import Cas

    return Cas(home_of(args).cas_root)


def _progress(message: str) -> None:
    """Progress for long operations goes to stderr, and only when stderr is a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{message}\033[K")
        sys.stderr.flush()


def cmd_put(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.clock import utc_now_iso
    from requiem.spool import write_record

    home = home_of(args)
    encoding, level = args.compress, args.level
    if encoding is None and home.config_path.exists():
        from requiem.config import load_config

        settings = load_config(home)["cas"]
        encoding, level = settings["compression"], level if level is not None else settings["level"]
    started = utc_now_iso()
    info = _cas(args).put_file(args.input, encoding=encoding or "identity",
                               level=3 if level is None else level)
    # A deduplicated put returns the object that was already there, created before we started.
    existed = info.created_at < started
    write_record(home.spool_dir, "cas_put", {**info.to_json(), "existed": existed})
    return {"ok": True, "existed": existed, **info.to_json()}, EXIT_OK


def cmd_get(args: argparse.Namespace) -> tuple[Any, int]:
    info = _cas(args).get_to_file(args.digest, args.out)
    return {"ok": True, "out": os.path.abspath(args.out), **info.to_json()}, EXIT_OK


def cmd_info(args: argparse.Namespace) -> tuple[Any, int]:
    return {"ok": True, **_cas(args).info(args.digest).to_json()}, EXIT_OK


def cmd_ls(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.cas import ObjectInfo

    objects = []
    for item in _cas(args).list_objects():
        if not isinstance(item, ObjectInfo):
            objects.append({"digest": item[0], "malformed": item[1]})
        else:
            objects.append(item.to_json())
    objects.sort(key=lambda o: o["digest"])
    return {"ok": True, "count": len(objects), "objects": objects}, EXIT_OK


def cmd_stats(args: argparse.Namespace) -> tuple[Any, int]:
    return {"ok": True, **_cas(args).stats(top=args.top)}, EXIT_OK


def cmd_verify(args: argparse.Namespace) -> tuple[Any, int]:
    _progress("verifying CAS objects…")
    report = _cas(args).verify(sample=args.sample, seed=args.seed)
    _progress("")
    from requiem.history import record_cas_verify

    record_cas_verify(home_of(args), report)
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def register(commands: Any) -> None:
    cas = commands.add_parser("cas", help="the content-addressed store")
    cas_commands = cas.add_subparsers(dest="cas_command", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = cas_commands.add_parser(name, help=help_text)
        sub.add_argument("--cas", help="CAS root (default <home>/cas)")
        sub.set_defaults(handler=handler)
        return sub

    put = add("put", cmd_put, "store a file")
    put.add_argument("--in", dest="input", required=True)
    put.add_argument("--compress", choices=["zstd", "identity"])
    put.add_argument("--level", type=int, help="zstd level (default 3, or the config's)")
    get = add("get", cmd_get, "write an object's content to a file")
    get.add_argument("--digest", required=True)
    get.add_argument("--out", required=True)
    add("info", cmd_info, "an object's metadata").add_argument("--digest", required=True)
    add("ls", cmd_ls, "list objects")
    add("stats", cmd_stats, "counts, bytes, ratio, largest objects").add_argument(
        "--top", type=non_negative_int, default=10)
    verify = add("verify", cmd_verify, "re-hash objects; exit 1 if any is corrupt")
    mode = verify.add_mutually_exclusive_group()
    mode.add_argument("--all", action="store_true", help="check every object (the default)")
    mode.add_argument("--sample", type=non_negative_int, help="check N objects chosen at random")
    verify.add_argument("--seed", type=int, help="seed for --sample (reproducible choice)")
