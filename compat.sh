#!/bin/sh
# The old command lines, kept working: mkimg.sh, kstrip.sh and startnb.sh are links to this
# script, which runs `smolfs build`, `kstrip` or `startnb` with the same arguments: the
# installed command when it is on PATH, else this checkout (its .venv when present).
here=$(cd "$(dirname "$0")" && pwd)
case $(basename "$0") in
  mkimg.sh) cmd=smolfs; module=smolfs; set -- build "$@" ;;
  kstrip.sh) cmd=kstrip; module=kstrip ;;
  startnb.sh) cmd=startnb; module=launcher ;;
  *) echo "compat.sh: run it as mkimg.sh, kstrip.sh or startnb.sh" >&2; exit 2 ;;
esac
if command -v "$cmd" >/dev/null 2>&1; then
  exec "$cmd" "$@"
fi
py=python3
[ -x "$here/.venv/bin/python" ] && py="$here/.venv/bin/python"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m "$module" "$@"
