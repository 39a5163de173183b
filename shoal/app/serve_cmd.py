"""``shoal serve``: the live page over a data dir, read-only, on 127.0.0.1 unless asked.

Serves ``shoal.app.web`` with aiohttp until Ctrl-C. The first line on stdout is the page's
address (``serving http://127.0.0.1:8080/``), so a script that asked for port 0 learns
which port it got.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from shoal.app.config import add_options
from shoal.app.report_cmd import data_dir_of, one_line_errors
from shoal.errors import UserError
from shoal.options import finite_float


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from shoal.app.web import ServeConfig, make_app

    config = ServeConfig(args.data_dir, refresh=args.refresh, query_timeout=args.query_timeout,
                         listen=args.host)
    runner = web.AppRunner(make_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") \
            from None
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else args.port
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving http://{host}:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@one_line_errors
def cmd_serve(args: argparse.Namespace) -> int:
    data_dir_of(args)
    if args.refresh < 0 or args.query_timeout <= 0:
        raise UserError("--refresh must be >= 0 and --query-timeout > 0")
    if not 0 <= args.port <= 65535:  # else exit 1 with OverflowError, as for a crash
        raise UserError("--port must be between 0 and 65535")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        print("shoal: stopped", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="a read-only live web page over a data dir")
    add_options(p, "serve")  # --data-dir, also from [flow] data_dir or SHOAL_FLOW_DATA_DIR
    p.add_argument("--port", type=int, default=8080, help="(default 8080; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--refresh", type=finite_float, default=10.0,
                   help="seconds between refreshes in the browser (default 10; 0: on demand)")
    p.add_argument("--query-timeout", type=finite_float, default=10.0,
                   help="seconds a section's queries may take before its error box shows")
    p.set_defaults(func=cmd_serve)
