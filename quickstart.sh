#!/usr/bin/env bash
# One command from a fresh Debian 12 / Ubuntu checkout to a booted NetBSD rescue VM:
#   1. ./setup.sh: QEMU, bubblewrap and a virtualenv in .venv with mksmolnb (only the
#      apt-get step may need root; sudo is used when you are not root);
#   2. `startnb rescue`: fetches the NetBSD kernel and rescue set into the cache, builds
#      rescue-amd64.img as you (no root), boots it. Extra arguments go to startnb.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MKSMOLNB_VENV:-.venv}
[ -x "$VENV/bin/startnb" ] || ./setup.sh
exec "$VENV/bin/startnb" rescue "$@"
