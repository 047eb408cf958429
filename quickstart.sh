#!/usr/bin/env bash
# One command from a fresh Debian 12 / Ubuntu checkout to a booted NetBSD rescue VM:
#   1. ./setup.sh: QEMU, bubblewrap and a virtualenv in .venv with mksmolnb (only the
#      apt-get step may need root; sudo is used when you are not root);
#   2. `startnb rescue --strip`: fetches the NetBSD GENERIC kernel and the rescue set into
#      the cache, builds rescue-amd64.img as you (no root), boots the kernel with the
#      drivers a VM lacks switched off (kstrip: a second less of probing). Extra
#      arguments go to startnb.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MKSMOLNB_VENV:-.venv}
[ -x "$VENV/bin/startnb" ] || ./setup.sh
exec "$VENV/bin/startnb" rescue --strip "$@"
