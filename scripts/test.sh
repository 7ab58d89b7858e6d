#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian/Ubuntu machine, then runs them:
#   bash scripts/test.sh [pytest args]
# System packages (nginx and its perl module, redis-server, wrk, chromium, varnish) come from apt when missing (as root, or with sudo);
# Python packages go into .venv. Same command locally and in CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in nginx:nginx redis-server:redis-server wrk:wrk chromium:chromium varnishd:varnish; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "${pair%%:*}" >/dev/null 2>&1 \
    || missing+=("${pair##*:}")
done
# the generated nginx.conf counts a signed asset's seconds left with nginx's perl (proxy/nginx.py)
[[ -f /usr/lib/nginx/modules/ngx_http_perl_module.so ]] || missing+=(libnginx-mod-http-perl)
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
# (pip's warnings about this machine's local index folders are noise: filtered, its exit code kept)
{ .venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1; } \
  | { grep -v "^WARNING: Location 'file:" || true; }

.venv/bin/ruff check proxy tests bench docs locustfile.py
exec .venv/bin/python -m pytest "$@"
