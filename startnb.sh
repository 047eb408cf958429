#!/bin/sh
# Compatibility wrapper: the old startnb.sh command line, now `startnb`.
# Uses the installed command when on PATH, else this checkout (its .venv if present).
here=$(cd "$(dirname "$0")" && pwd)
if command -v startnb >/dev/null 2>&1; then
  exec startnb "$@"
fi
py=python3
[ -x "$here/.venv/bin/python" ] && py="$here/.venv/bin/python"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m launcher "$@"
