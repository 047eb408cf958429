#!/bin/sh
# Compatibility wrapper: the old kstrip.sh command line, now `kstrip`.
# Uses the installed command when on PATH, else this checkout (its .venv if present).
here=$(cd "$(dirname "$0")" && pwd)
if command -v kstrip >/dev/null 2>&1; then
  exec kstrip "$@"
fi
py=python3
[ -x "$here/.venv/bin/python" ] && py="$here/.venv/bin/python"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m kstrip "$@"
