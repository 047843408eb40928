#!/usr/bin/env bash
# Install the Debian packages the tests need, only those missing. Needs root (as on CI) or sudo.
#   java (PySpark), chromium (browser tests), prometheus (promtool), postgresql, redis-server.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
{ command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "tasklens setup: missing Debian packages ${need[*]}; install them as root: apt-get install -y ${need[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "tasklens setup: installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian prometheus package starts a service; tests start their own on 127.0.0.1.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus prometheus-node-exporter redis-server postgresql >/dev/null 2>&1 || true; fi
