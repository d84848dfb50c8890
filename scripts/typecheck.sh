#!/usr/bin/env bash
# Type-check the installed package as Python sees it: `servestack` with catalog/ and
# components/ mapped in as servestack.catalog and servestack.components (pyproject.toml's
# package-dir). mypy cannot follow setuptools' editable-install hooks, so a mirror of that
# layout is built from symlinks (in .mypy_tree/, kept so mypy's cache stays valid between
# runs) and checked with `-p servestack`. Extra arguments go to mypy.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tree="$repo/.mypy_tree"
rm -rf "$tree"
mkdir -p "$tree/servestack"
for entry in "$repo"/servestack/*; do
  ln -s "$entry" "$tree/servestack/$(basename "$entry")"
done
ln -s "$repo/catalog" "$tree/servestack/catalog"
ln -s "$repo/components" "$tree/servestack/components"
cd "$tree"
python3 -m mypy --ignore-missing-imports --cache-dir "$repo/.mypy_cache" -p servestack "$@"
