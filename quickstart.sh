#!/usr/bin/env bash
# One command from a fresh Debian 12 / Ubuntu checkout to a booted NetBSD rescue VM:
#   1. system packages (apt-get, only when something is missing): QEMU, bubblewrap, venv;
#   2. a virtualenv in .venv with mksmolnb installed;
#   3. `startnb rescue`: fetches the NetBSD kernel and rescue set into the cache, builds
#      rescue-amd64.img as you (no root), boots it. Extra arguments go to startnb.
# Only step 1 may need root (sudo is used when you are not root); everything else runs as you.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# program → Debian package
declare -A NEED=(
  [qemu-system-x86_64]=qemu-system-x86
  [bwrap]=bubblewrap
)
missing=()
for prog in "${!NEED[@]}"; do
  command -v "$prog" >/dev/null 2>&1 || missing+=("${NEED[$prog]}")
done
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "quickstart: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

VENV=${MKSMOLNB_VENV:-.venv}
if [ ! -x "$VENV/bin/startnb" ]; then
  echo "quickstart: setting up $VENV" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e .
fi

exec "$VENV/bin/startnb" rescue "$@"
