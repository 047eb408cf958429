#!/bin/sh
# Compatibility wrapper: the old mkimg.sh command line, now `smolfs build`.
# Uses the installed command when on PATH, else this checkout (its .venv if present).
here=$(cd "$(dirname "$0")" && pwd)
if command -v smolfs >/dev/null 2>&1; then
  exec smolfs build "$@"
fi
py=python3
[ -x "$here/.venv/bin/python" ] && py="$here/.venv/bin/python"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m smolfs build "$@"
