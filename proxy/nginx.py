"""``preview-proxy nginx-conf``: a complete nginx.conf for production, made from the service's config.

nginx answers everything that is a file on disk (renders in the cache folder, originals of local
origins) with sendfile, checks signed links itself (``secure_link``, same formula as
``links.sign``), and passes the decisions (the API's 302s) to the proxy upstreams, hashed on the
file path so that every size of one photo is rendered on one node. A render's URL that is not on
this host's disk (made on another host, or evicted) goes to this host's own service, which makes it
from the URL's description and answers the image (``links.py``, API.md section 10).
"""

from __future__ import annotations

import os
import re

from .config import Config, LibraryConfig
from .links import NGINX_RENDER_URL, ORIGINALS, PRIVATE, has_private

_SAFE = re.compile(r"^[A-Za-z0-9_./:@+-]+$")
# Where distributions put nginx's dynamic perl module (Debian/Ubuntu and nginx.org, then RHEL)
PERL_MODULES = ("/usr/lib/nginx/modules/ngx_http_perl_module.so",
                "/usr/lib64/nginx/modules/ngx_http_perl_module.so")
# A signed asset may be kept by the browser until its link expires (API section 4), and no longer:
# nginx has no arithmetic, so the seconds left are counted by its embedded perl (inline: the
# generated file stays self-contained). Without the module, browsers revalidate instead (ETag, 304).
_PERL_MAX_AGE = ("    perl_set $preview_private_max_age 'sub { my $e = $_[0]->variable(\"arg_expires\");\n"
                 "        my $left = ($e =~ /^[0-9]{1,12}$/ ? $e : 0) - time; $left > 0 ? $left : 0 }';\n")
PRIVATE_CC_PERL = "private, max-age=$preview_private_max_age"
PRIVATE_CC_PLAIN = "private, no-cache"


def perl_module() -> str:
    """The path of nginx's dynamic perl module on this machine, or "" when it is not installed."""
    return next((path for path in PERL_MODULES if os.path.isfile(path)), "")

TYPES = """\
        image/jpeg jpeg jpg;
        image/png png;
        image/gif gif;
        image/webp webp;
        image/avif avif;
        image/heic heic;
        image/heif heif;
        image/tiff tif tiff;
        image/bmp bmp;
        video/mp4 mp4 m4v;
        video/quicktime mov;
        video/webm webm;
        video/x-matroska mkv;
        video/x-msvideo avi;
        video/x-flv flv;
        application/pdf pdf;"""


def _quote(value: str) -> str:
    """A value for an nginx directive: refuse what could break out of it (quotes, ;, braces, $)."""
    if not _SAFE.match(value):
        raise ValueError(f"cannot put {value!r} into nginx.conf safely")
    return value


def _secret(value: str) -> str:
    if any(c in value for c in "\"'\\;{}$\n\r"):
        raise ValueError("cache.sign_secret holds a character nginx.conf cannot carry (quote, ;, {}, $)")
    return value


def _secure(config: Config) -> str:
    secret = _secret(config.cache.sign_secret.reveal())
    return (f'            secure_link $arg_md5,$arg_expires;\n'
            f'            secure_link_md5 "$secure_link_expires$uri {secret}";\n'
            f'            if ($secure_link = "") {{ return 403; }}  # missing or tampered\n'
            f'            if ($secure_link = "0") {{ return 403; }}  # expired\n')


# originals are the users' files served on our host: never let one run as a page (same as the proxy)
_SAFE_HEADERS = ('            add_header X-Content-Type-Options nosniff always;\n'
                 '            add_header Content-Security-Policy '
                 '"default-src \'none\'; style-src \'unsafe-inline\'; sandbox" always;\n')


def _described(prefix: str, cache_dir: str, private: str, cache_control: str, check: str = "") -> str:
    """Render URLs that describe their render (``links.render_uri``): the file when this host has it,
    else the service (``@asset``), which makes it. The description is not part of the file name."""
    pattern = f"^{re.escape(prefix)}{NGINX_RENDER_URL}"
    # an outer location's checks do not run when a nested one matches: repeated here
    check = check.replace("            ", "                ")
    return (f'            location ~ "{pattern}" {{\n{check}'
            f"                limit_except GET {{ deny all; }}\n"
            f"                root {cache_dir};\n"
            f"                try_files /{private}$1/$2/$3/$4.$5 @asset;\n"
            f'                add_header Cache-Control "{cache_control}" always;\n'
            f"            }}\n")


# a space id of a multi-tenant library's original link; "-" (no space) is refused there by the API too
_SPACE = r"(?!-/)[A-Za-z0-9_-]{1,64}"


def _originals(config: Config, lib: LibraryConfig, private_cc: str) -> str:
    """Download links of one library: ``{prefix}o/{id}/{space}/{path}`` from its folder or origin."""
    prefix = f"{config.cache.asset_prefix}{ORIGINALS}{lib.id}/"
    if lib.is_s3:  # nginx cannot sign for S3: the proxy checks the link and streams the object
        return _to_api(prefix)
    private = has_private(lib)  # then the proxy signs every original link of the library
    check = _secure(config) if private and config.cache.sign_secret else ""
    if private and not config.cache.sign_secret:
        return f"        location ^~ {prefix} {{ return 403; }}  # private, and no sign_secret to check\n"
    cc = private_cc if private else "public, max-age=3600"
    head = (f"{check}            limit_except GET {{ deny all; }}\n"
            f'            add_header Cache-Control "{cc}" always;\n{_SAFE_HEADERS}')
    if lib.is_http:
        # no variables in proxy_pass: the origin's name is then resolved once, at start
        base = _quote(lib.origin if lib.origin.endswith("/") else lib.origin + "/")
        location = prefix if lib.multi_tenant else f"{prefix}-/"
        # only {prefix}{space}/{path} reaches the origin, as the API allows; an `if` (proxy_pass
        # with a URI cannot sit in a regex location) that only returns is safe in nginx
        spaces = (f'            if ($uri !~ "^{re.escape(prefix)}{_SPACE}/.") {{ return 404; }}\n'
                  if lib.multi_tenant else "")
        return (f"        location ^~ {location} {{\n{spaces}{head}"
                f"            proxy_hide_header Content-Type;  # the type by our extension map, not theirs\n"
                f"            proxy_pass {base};\n"
                f"            proxy_ssl_server_name on;\n"
                f"        }}\n")
    root = _quote(os.path.realpath(lib.origin))
    symlinks = f"            disable_symlinks on from={root};  # nothing outside the origin folder\n"
    if lib.multi_tenant:  # /o/{id}/{space}/{path}: a space id, then the file in that space's folder
        space = _SPACE
        return (f"        location ^~ {prefix} {{\n"
                f'            location ~ "^{re.escape(prefix)}({space})/(.+)$" {{\n'
                f"    {head.replace(chr(10) + '            ', chr(10) + '                ')}"
                f"                alias {root}/$1/$2;\n    {symlinks}"
                f"            }}\n"
                f"            return 404;\n"
                f"        }}\n")
    return (f"        location ^~ {prefix}-/ {{\n{head}"
            f"            alias {root}/;\n{symlinks}"
            f"        }}\n")


def _to_api(location: str) -> str:
    return (f"        location ^~ {location} {{\n"
            f"            limit_except GET {{ deny all; }}\n"
            f"            proxy_pass http://preview_proxy;\n"
            f"            include proxy_common;\n"
            f"        }}\n")


def _mount(lib: LibraryConfig) -> str:
    """A drop-in mount: ``?preview`` goes to the proxy, anything else is the original from the origin."""
    mount = _quote(lib.mount)
    if lib.is_s3:  # originals too: the proxy streams them (and answers 403 to a private one)
        return _to_api(mount)
    if lib.is_http:
        serve = (f"            proxy_pass {_quote(lib.origin.rstrip('/'))}/;\n"
                 f"            proxy_ssl_server_name on;\n")
    else:
        root = _quote(os.path.realpath(lib.origin))
        serve = (f"            alias {root}/;\n"
                 f"            disable_symlinks on from={root};\n")
    if not lib.public_read:  # private originals only through the API (token, then signed link)
        serve = "            return 403;\n"
    return (f"        location ^~ {mount} {{\n"
            f"            error_page 418 = @api;\n"
            f'            if ($args ~ "(^|&)preview(=[^&]*)?(&|$)") {{ return 418; }}\n'
            f"            limit_except GET {{ deny all; }}\n{serve}"
            f"        }}\n")


def render_nginx_conf(config: Config, listen: str, upstreams: list[str], user: str = "",
                      perl: str | None = None) -> str:
    """The whole nginx.conf (run it with ``nginx -p DIR -c FILE``; DIR/logs must exist). ``perl``: the
    path of nginx's perl module where that nginx runs (None: ``perl_module()`` here; "": none)."""
    for address in [listen, *upstreams]:
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", address):
            raise ValueError(f"expected HOST:PORT, got {address!r}")
    prefix = config.cache.asset_prefix
    cache_dir = _quote(os.path.realpath(config.cache.dir))
    # perl counts signed assets' seconds left; nothing is signed without a sign_secret
    perl = (perl_module() if perl is None else perl) if config.cache.sign_secret else ""
    private_cc = PRIVATE_CC_PERL if perl else PRIVATE_CC_PLAIN
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=10s;" for u in upstreams)
    # a render missing here is made by this host's own service; the others only if it is down
    own = "\n".join(f"        server {u} max_fails=1 fail_timeout=10s{' backup' * bool(i)};"
                     for i, u in enumerate(upstreams))
    private_renders = (
        f"        location ^~ {prefix}{PRIVATE} {{\n{_secure(config)}"
        f"            limit_except GET {{ deny all; }}\n"
        f"{_described(prefix + PRIVATE, cache_dir, PRIVATE, private_cc, _secure(config))}"
        f"            alias {cache_dir}/{PRIVATE};\n"
        f'            add_header Cache-Control "{private_cc}" always;\n'
        f"        }}\n" if config.cache.sign_secret else
        f"        location ^~ {prefix}{PRIVATE} {{ return 403; }}  # no sign_secret: nothing to check\n")
    originals = "".join(_originals(config, lib, private_cc) for lib in config.libraries)
    mounts = "".join(_mount(lib) for lib in config.libraries if lib.mount)
    user_line = f"user {_quote(user)};\n" if user else ""
    load_perl = f"load_module {_quote(perl)};\n" if perl else ""
    max_age = _PERL_MAX_AGE if perl else ""
    return f"""# nginx.conf generated by `preview-proxy nginx-conf` from {config.source}.
# Run: nginx -p DIR -c THIS_FILE   (DIR/logs must exist; every other path is absolute or under DIR,
# the pid file and temporary files included: no root needed on a port above 1024)
# It holds cache.sign_secret when one is set: keep it readable by nginx only.
{user_line}{load_perl}worker_processes auto;
pid nginx.pid;
error_log logs/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    # temporary files under the prefix, so that an ordinary user can run this nginx
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    types {{
{TYPES}
    }}
    default_type application/octet-stream;
{max_age}    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    server_tokens on;  # "Server: nginx/..." tells a client (and our tests) who answered
    access_log off;    # the proxy logs every API request as JSON; assets are nginx's alone

    # the client's X-Request-Id when it sent one, else nginx's own: passed to the proxy and logged
    map $http_x_request_id $preview_request_id {{
        ""      $request_id;
        default $http_x_request_id;
    }}

    upstream preview_proxy {{
        # one photo's renders land on one node (its disk cache); consistent: losing a node moves
        # only that node's share
        hash $uri consistent;
{servers}
        keepalive 64;
    }}

    upstream preview_assets {{
{own}
        keepalive 16;
    }}

    server {{
        listen {listen} reuseport;

        # renders of public libraries: immutable files named by their key
        location ^~ {prefix} {{
            location ~ /\\. {{ return 404; }}  # temporary files of renders being written
            limit_except GET {{ deny all; }}
{_described(prefix, cache_dir, "", "public, max-age=31536000, immutable")}\
            alias {cache_dir}/;
            add_header Cache-Control "public, max-age=31536000, immutable" always;
        }}

        # renders of private content: only with a valid signature (links.sign's formula)
{private_renders}
        # originals (download links)
{originals}
        # drop-in mounts of existing site URLs
{mounts}
        # a render this host does not have: its own service makes it from the URL and answers it
        location @asset {{
            proxy_pass http://preview_assets;
            include proxy_common;
        }}

        location @api {{
            proxy_pass http://preview_proxy;
            include proxy_common;
        }}

        # the API and everything else: the proxy decides
        location / {{
            proxy_pass http://preview_proxy;
            include proxy_common;
        }}
    }}
}}
""".replace("include proxy_common;", _PROXY_COMMON.strip())


_PROXY_COMMON = """
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $preview_request_id;
            proxy_connect_timeout 1s;
            proxy_read_timeout 120s;
            # the next node only where the request never reached a service: a refused or failed
            # connection, or none within proxy_connect_timeout. Never on an answer (a node's 502 is the
            # origin's, the same on every node: retrying multiplies the origin's load in an outage), and
            # never after a render started: retries end 3 s in, long before the read timeout (a slow
            # render would be rendered twice). POST/DELETE are never resent once sent (no non_idempotent).
            proxy_next_upstream error timeout;
            proxy_next_upstream_timeout 3s;
            proxy_next_upstream_tries 3;
"""
