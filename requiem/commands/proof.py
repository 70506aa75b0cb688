"""`requiem proof generate|verify`: Merkle-rooted proof bundles."""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of
from requiem.errors import EXIT_FAILED, EXIT_OK


def cmd_generate(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import canonical, proof
    from requiem.commands.exec import write_json

    bundle = proof.generate(canonical.load_file(args.request),
                            canonical.load_file(args.result, max_bytes=256 << 20), args.signer)
    write_json(args.out, bundle)
    return {"ok": True, **bundle}, EXIT_OK


def cmd_verify(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import canonical, proof
    from requiem.cas import Cas

    bundle = canonical.load_file(args.bundle)
    request = canonical.load_file(args.request) if args.request else None
    result = canonical.load_file(args.result, max_bytes=256 << 20) if args.result else None
    home = home_of(args)
    cas = Cas(home.cas_root) if home.cas_root.exists() else None
    report = proof.verify(bundle, request, result, cas, args.verifier)
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def register(commands: Any) -> None:
    proof = commands.add_parser("proof", help="proof bundles")
    sub = proof.add_subparsers(dest="proof_command", required=True)
    gen = sub.add_parser("generate", help="bind a request and its result under a Merkle root")
    gen.add_argument("--request", required=True)
    gen.add_argument("--result", required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument("--signer", help="command that signs the root (given on stdin)")
    gen.set_defaults(handler=cmd_generate)
    ver = sub.add_parser("verify", help="recompute a bundle; check content in the CAS")
    ver.add_argument("--bundle", required=True)
    ver.add_argument("--request")
    ver.add_argument("--result")
    ver.add_argument("--cas", help="CAS root (default <home>/cas)")
    ver.add_argument("--verifier", help="command checking $REQUIEM_PROOF_SIGNATURE")
    ver.set_defaults(handler=cmd_verify)
