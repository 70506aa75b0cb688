"""`requiem metrics`: Prometheus metrics from the history, as JSON, text, or served over HTTP."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from requiem.commands import home_of
from requiem.errors import EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import metrics

    if args.format == "json":
        return metrics.render_json(home_of(args)), EXIT_OK
    sys.stdout.buffer.write(metrics.render_prom(home_of(args)))
    sys.stdout.flush()
    return None, EXIT_OK


def cmd_serve(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import metrics
    from requiem.cli import emit

    server, port = metrics.serve(home_of(args), args.addr, args.port)
    emit({"ok": True, "url": f"http://{args.addr}:{port}/metrics", "addr": args.addr,
          "port": port})
    # SIGTERM (a service manager stopping us) ends the process cleanly, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
    return None, EXIT_OK


def register(commands: Any) -> None:
    sub = commands.add_parser("metrics", help="metrics computed from the history")
    sub.add_argument("--format", choices=["json", "prom"], default="json")
    sub.set_defaults(handler=cmd_metrics)
    actions = sub.add_subparsers(dest="metrics_command")
    serve = actions.add_parser("serve", help="serve /metrics over HTTP for scraping")
    serve.add_argument("--addr", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9464, help="port (0 picks a free one)")
    serve.set_defaults(handler=cmd_serve)
