"""Command line: ``preview-proxy serve [--config FILE] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tomllib
from pathlib import Path

from aiohttp import web

from .app import create_app
from .config import ConfigError, load_config
from .demo import DEMO_ID, seed_demo
from .nginx import render_nginx_conf
from .workers import supervise

DEFAULT_CONFIG = "config/preview-proxy.toml"


def _seed_demo(path: str) -> None:
    """First run of the shipped config: fill the demo library's folder with sample photos."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return  # load_config reports it
    for lib in raw.get("libraries", []):
        origin = lib.get("origin", "") if isinstance(lib, dict) else ""
        is_demo = isinstance(lib, dict) and lib.get("id") == DEMO_ID and origin and "://" not in origin
        if is_demo and (copied := seed_demo(Path(origin))):
            print(f"demo library: {copied} sample photos copied into {origin}/", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    _seed_demo(args.config)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    logging.getLogger("proxy").info(
        '{"event": "start", "url": "http://%s:%d", "libraries": %d}', host, port, len(config.libraries))
    # aiohttp's run_app stops accepting on SIGTERM/SIGINT, lets in-flight requests finish
    # (shutdown_timeout), runs the cleanup contexts (drains the render pool) and returns: exit 0.
    web.run_app(create_app(config), host=host, port=port, access_log=None, print=None,
                shutdown_timeout=60, handle_signals=True, reuse_port=args.reuse_port or None)
    return 0


def _nginx_conf(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        upstreams = args.upstream or [f"{config.server.host}:{config.server.port}"]
        print(render_nginx_conf(config, args.listen, upstreams, user=args.user), end="")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"nginx-conf: {exc}", file=sys.stderr)
        return 2
    return 0


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help=f"TOML config (default: $PREVIEW_PROXY_CONFIG or {DEFAULT_CONFIG})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="preview-proxy", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="run the service")
    _config_arg(serve)
    serve.add_argument("--host", default=None, help="listen address (default: [server] host)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default: [server] port)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port, the cache folder and the store "
                            "(0 = one per core; default 1)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    conf = verbs.add_parser("nginx-conf", help="print a complete nginx.conf for production")
    _config_arg(conf)
    conf.add_argument("--listen", required=True, metavar="HOST:PORT", help="where nginx listens")
    conf.add_argument("--upstream", action="append", metavar="HOST:PORT",
                      help="a proxy process or node; repeat for several (default: [server] host:port)")
    conf.add_argument("--user", default="", help="nginx worker user (when nginx starts as root)")
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = os.environ.get("PREVIEW_PROXY_CONFIG") or DEFAULT_CONFIG
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("pyvips").setLevel(logging.WARNING)  # libvips' own chatter is not a log line
    if args.verb == "nginx-conf":
        return _nginx_conf(args)
    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    if workers > 1:
        _seed_demo(args.config)  # once, before the workers race to do it
        child = ["--config", args.config]
        child += ["--host", args.host] if args.host else []
        child += ["--port", str(args.port)] if args.port is not None else []
        return supervise(workers, child)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
