#!/usr/bin/env bash
# import-linter walks a package's own directory, so it cannot see requiem.tui and
# requiem.analytics, which live in tui/ and analytics/ (pyproject's package-dir). Lay the
# package out as it is installed, then lint that copy from inside it (so the checkout's
# requiem/ is not what gets imported).
set -euo pipefail
cd "$(dirname "$0")/.."
lint="$(realpath "${1:-.venv/bin/lint-imports}")"
out=build/lint
rm -rf "$out" && mkdir -p "$out"
cp -r requiem "$out/requiem"
cp -r tui "$out/requiem/tui"
cp -r analytics "$out/requiem/analytics"
cd "$out" && PYTHONPATH=. "$lint" --config ../../pyproject.toml --no-cache
