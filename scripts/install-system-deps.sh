#!/usr/bin/env bash
# Installs the Debian tools the test suite and benchmarks use, where this machine allows it:
# bwrap (sandbox backend), b3sum (hash agreement), tmux (TUI end-to-end), promtool (metrics lint),
# hyperfine (benchmarks). Missing tools make their tests skip with the reason; they never fail set-up.
set -u
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v b3sum >/dev/null 2>&1 || need+=(b3sum)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: not root or no apt-get; missing: ${need[*]} (their tests will skip)" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "install-system-deps: apt-get could not install ${need[*]} (their tests will skip)" >&2
exit 0
