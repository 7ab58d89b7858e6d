"""preview-proxy: a self-hosted image preview service (the SMH thumbnail API over your own storage).

Every verb takes --config FILE (default: $PREVIEW_PROXY_CONFIG or config/preview-proxy.toml) and has
its own --help.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from aiohttp import web

from .access import origin_space
from .app import create_app
from .checks import check, parse_probe
from .config import Config, ConfigError, LibraryConfig, load_config
from .cpus import usable_cpus
from .demo import DEMO_ID, seed_demo
from .errors import ApiError
from .faces import FaceModelError, detector_name
from .faces import load as load_detector
from .nginx import render_nginx_conf
from .tools import cache_purge, cache_stats, human_bytes, parse_duration, warm
from .workers import listen, startup_failed, supervise

DEFAULT_CONFIG = "config/preview-proxy.toml"


def _serving_config(args: argparse.Namespace) -> Config | None:
    """The config ``serve`` runs (``--workers`` applied), validated before anything is done with it:
    the demo library's folder (first run of the shipped config) is filled only for a valid config."""
    env = dict(os.environ)
    if args.workers is not None:
        env["PREVIEW_PROXY_SERVER_WORKERS"] = str(args.workers)
    try:
        demo = load_config(args.config, env, check_folders=False).library(DEMO_ID)
        if demo is not None and "://" not in demo.origin and (copied := seed_demo(Path(demo.origin))):
            print(f"demo library: {copied} sample photos copied into {demo.origin}/", file=sys.stderr)
        return load_config(args.config, env)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _serve(args: argparse.Namespace, config: Config) -> int:
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    try:  # before it listens: a model that cannot load stops the service (or its first worker)
        load_detector(config.faces)
    except FaceModelError as exc:
        return startup_failed(str(exc))
    try:
        sockets = listen(host, port, reuse_port=args.reuse_port)
    except OSError as exc:
        return startup_failed(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(config)
    started = False

    async def on_started(_app: web.Application) -> None:  # after every start-up step of the app
        nonlocal started
        started = True
        logging.getLogger("proxy").info('{"event": "start", "url": "http://%s:%d", "libraries": %d}',
                                        host, port, len(config.libraries))
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)

    app.on_startup.append(on_started)
    # aiohttp's run_app stops accepting on SIGTERM/SIGINT, lets in-flight requests finish
    # (shutdown_timeout), runs the cleanup contexts (drains the render pool) and returns: exit 0.
    try:
        web.run_app(app, sock=sockets, access_log=None, print=None, shutdown_timeout=60,
                    handle_signals=True)
    except Exception as exc:
        if started:
            raise
        return startup_failed(f"start-up failed: {type(exc).__name__}: {exc}")
    return 0


def _nginx_conf(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        upstreams = args.upstream or [f"{config.server.host}:{config.server.port}"]
        perl = {"": None, "none": ""}.get(args.perl_module, args.perl_module)
        print(render_nginx_conf(config, args.listen, upstreams, user=args.user, perl=perl), end="")
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


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _library(config: Config, library_id: str) -> LibraryConfig | None:
    lib = config.library(library_id)
    if lib is None:
        known = ", ".join(repr(x.id) for x in config.libraries)
        print(f"no library {library_id!r} in {config.source} (libraries: {known})", file=sys.stderr)
    return lib


def _warm(args: argparse.Namespace) -> int:
    config = _load(args)
    lib = config and _library(config, args.library)
    if config is None or lib is None:
        return 2
    try:
        origin_space(lib, args.space)
    except ApiError as exc:  # e.g. a multi-tenant library and no --space
        print(f"--space {args.space}: {exc.message}", file=sys.stderr)
        return 2
    if lib.is_http and not args.paths:
        print(f"library {lib.id!r} is an HTTP origin, which cannot be listed: name the paths",
              file=sys.stderr)
        return 2
    try:
        sizes = sorted({int(x) for x in args.sizes.split(",")})
    except ValueError:
        print(f"--sizes: expected whole numbers such as 100,200,400, got {args.sizes!r}", file=sys.stderr)
        return 2
    summary = asyncio.run(warm(config, lib, args.space, sizes, args.paths, progress=not args.quiet))
    print(f"rendered {summary.rendered}, skipped {summary.skipped} (already cached), "
          f"failed {sum(summary.failed.values())} files in {summary.seconds:.1f} s")
    for reason, count in summary.failed.most_common():
        print(f"  {count} x {reason}")
    return 1 if summary.failed else 0


def _cache(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    if args.action == "stats":
        stats = cache_stats(config, args.url)
        print(f"{config.cache.dir}: {stats.files} renders, {human_bytes(stats.bytes)} "
              f"(bound {human_bytes(config.cache.max_size)})")
        for library, (files, size) in stats.by_library.items():
            print(f"  {library}: {files} renders, {human_bytes(size)}")
        if stats.hits is not None and stats.misses is not None:
            total = stats.hits + stats.misses
            ratio = f"{100 * stats.hits / total:.1f}%" if total else "n/a"
            print(f"hit ratio since the service at {args.url} started: {ratio} "
                  f"({stats.hits:.0f} hits, {stats.misses:.0f} misses)")
        elif args.url:
            print(f"no metrics from {args.url} (is the service running?)")
        return 0
    if args.library and config.library(args.library) is None:
        _library(config, args.library)
        return 2
    try:
        older = parse_duration(args.older_than) if args.older_than else 0.0
    except ValueError as exc:
        print(f"--older-than: {exc}", file=sys.stderr)
        return 2
    files, freed = cache_purge(config, args.library, older)
    print(f"removed {files} renders, {human_bytes(freed)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    try:
        probes = [parse_probe(text) for text in args.probe or []]
    except ValueError as exc:
        print(f"--probe: {exc}", file=sys.stderr)
        return 2
    problems = asyncio.run(check(config, probes))
    detector = detector_name(config.faces)
    print(f"{config.source}: {len(config.libraries)} libraries, face detector: {detector}")
    try:
        load_detector(config.faces)
    except FaceModelError as exc:
        problems.append(str(exc))
    for problem in problems:
        print(f"  problem: {problem}")
    if not problems:
        print(f"all well: every origin answered{' (and every --probe file)' if probes else ''}, "
              f"the face detector loaded ({detector})")
    return 1 if problems else 0


def _token(args: argparse.Namespace) -> int:
    """Ask the running service for a token (it lives in the service's store, shared over Redis)."""
    config = _load(args)
    lib = config and _library(config, args.library)
    if config is None or lib is None:
        return 2
    url = (args.url or f"http://{config.server.host}:{config.server.port}").rstrip("/")
    form = {"library_id": lib.id, "library_secret": lib.secret.reveal()}
    if args.admin:
        form["grant"] = "admin"
    if args.space:
        form["space_id"] = ",".join(args.space)
    if args.user:
        form["user_id"] = args.user
    if args.period:
        form["period"] = str(args.period)
    # POSTed as a form: the secret stays out of URLs and access logs
    request = urllib.request.Request(f"{url}/api/v1/token", data=urllib.parse.urlencode(form).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            print(resp.read().decode())
    except urllib.error.HTTPError as exc:
        print(f"the service answered {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"no service at {url} ({exc}); tokens live in the running service's store: "
              "start it, or pass --url", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="preview-proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="run the service", description="Run the service.")
    _config_arg(serve)
    serve.add_argument("--host", default=None, help="listen address (default: [server] host)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default: [server] port)")
    serve.add_argument("--workers", type=int, default=None,
                       help="processes sharing the port, the cache folder and the store "
                            "(0 = one per usable CPU; default: [server] workers, 1)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker's
    serve.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)  # of supervise()
    warm_p = verbs.add_parser("warm", help="pre-render a library into the cache",
                              description="Render size=S squares of a library's files (or PATHs) "
                                          "into the cache, with a progress bar and a summary.")
    _config_arg(warm_p)
    warm_p.add_argument("--library", required=True, help="library id")
    warm_p.add_argument("--space", default="-", help="space id of a multi-tenant library (default: -)")
    warm_p.add_argument("--sizes", default="200", help="comma-separated sizes (default: 200)")
    warm_p.add_argument("--quiet", action="store_true", help="no progress bar")
    warm_p.add_argument("paths", nargs="*", metavar="PATH", help="files to warm (default: the whole folder)")
    cache_p = verbs.add_parser("cache", help="cache statistics and purging",
                               description="Inspect or purge the render cache.")
    cache_verbs = cache_p.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats_p = cache_verbs.add_parser("stats", help="renders and bytes per library, hit ratio",
                                     description="Renders and bytes per library; the hit ratio comes "
                                                 "from a running service's /metrics.")
    _config_arg(stats_p)
    stats_p.add_argument("--url", default="", help="a running service, e.g. http://127.0.0.1:8080")
    purge_p = cache_verbs.add_parser("purge", help="delete renders", description="Delete renders.")
    _config_arg(purge_p)
    purge_p.add_argument("--library", default="", help="only this library's renders")
    purge_p.add_argument("--older-than", default="", metavar="AGE",
                         help="only renders older than AGE (7d, 12h)")
    check_p = verbs.add_parser("check", help="validate a config and reach its origins",
                               description="Validate the config and reach every origin; say every problem.")
    _config_arg(check_p)
    check_p.add_argument("--probe", action="append", metavar="LIBRARY:PATH",
                         help="a file that must exist in LIBRARY: proves an HTTP origin's prefix right "
                              "(for origins that answer 404 at their base URL); repeat for several")
    token_p = verbs.add_parser("token", help="operator tokens", description="Operator tokens.")
    token_verbs = token_p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_p = token_verbs.add_parser("create", help="create an access token",
                                      description="Create an access token through the running service "
                                                  "(with the library's secret from the config).")
    _config_arg(create_p)
    create_p.add_argument("--library", required=True, help="library id")
    create_p.add_argument("--admin", action="store_true", help="grant admin (every space, acts as user_id)")
    create_p.add_argument("--space", action="append", help="a space the token reaches; repeat for several")
    create_p.add_argument("--user", default="", help="the user the token is for")
    create_p.add_argument("--period", type=int, default=0, help="seconds of validity after each use")
    create_p.add_argument("--url", default="", help="the service (default: [server] host:port)")
    conf = verbs.add_parser("nginx-conf", help="print a complete nginx.conf for production",
                            description="Print a complete nginx.conf (run it with nginx -p DIR -c FILE).")
    _config_arg(conf)
    conf.add_argument("--listen", required=True, metavar="HOST:PORT", help="where nginx listens")
    conf.add_argument("--upstream", action="append", metavar="HOST:PORT",
                      help="a proxy process or node; repeat for several (default: [server] host:port)")
    conf.add_argument("--user", default="", help="nginx worker user (when nginx starts as root)")
    conf.add_argument("--perl-module", default="", metavar="PATH",
                      help="nginx's ngx_http_perl_module.so where that nginx runs, or 'none' (default: "
                           "found on this machine); it counts signed assets' max-age")
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = os.environ.get("PREVIEW_PROXY_CONFIG") or DEFAULT_CONFIG
    # the service logs a JSON line per request; the operator's tools only warnings
    logging.basicConfig(level=logging.INFO if args.verb == "serve" else logging.WARNING,
                        format="%(message)s", stream=sys.stdout if args.verb == "serve" else sys.stderr)
    # libvips' own chatter is not a log line: its warnings about a file that fails to decode
    # ("VIPS: error in tile ...") say less than the typed error the render raises
    logging.getLogger("pyvips").setLevel(logging.ERROR)
    handlers = {"nginx-conf": _nginx_conf, "warm": _warm, "cache": _cache, "check": _check,
                "token": _token}
    if args.verb in handlers:
        return handlers[args.verb](args)
    config = _serving_config(args)
    if config is None:
        return 2
    workers = config.server.processes
    if workers > 1 and not args.reuse_port:
        child = ["--config", args.config]
        child += ["--host", args.host] if args.host else []
        child += ["--port", str(args.port)] if args.port is not None else []
        env = {}
        if config.limits.render_concurrency == 0:  # the CPUs shared out, not CPUs x processes
            env["PREVIEW_PROXY_LIMITS_RENDER_CONCURRENCY"] = str(max(1, usable_cpus() // workers))
        return supervise(workers, child, env)
    return _serve(args, config)


if __name__ == "__main__":
    sys.exit(main())
