#!/usr/bin/env bash
# import-linter walks a package's own directory without following symlinks, so it cannot see
# requiem.tui and requiem.analytics, which live in tui/ and analytics/ (pyproject's package-dir;
# requiem/tui and requiem/analytics are symlinks for the editable install). Lay the
# package out as it is installed, then lint that copy from inside it (so the checkout's
# requiem/ is not what gets imported).
set -euo pipefail
cd "$(dirname "$0")/.."
lint="$(realpath "${1:-.venv/bin/lint-imports}")"
out=build/lint
rm -rf "$out" && mkdir -p "$out"
# -L: requiem/tui and requiem/analytics are symlinks to the folders; copy what they point to.
cp -rL requiem "$out/requiem"
cd "$out" && PYTHONPATH=. "$lint" --config ../../pyproject.toml --no-cache
