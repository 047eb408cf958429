#!/usr/bin/env bash
# Prepare this checkout on a Debian 12 / Ubuntu machine:
#   1. system packages, with apt-get and only when something is missing (sudo when you are
#      not root): QEMU for this machine's own CPU (qemu-system-x86 on amd64, qemu-system-arm
#      on arm64: the guests that run accelerated here), bubblewrap and python3-venv to run;
#      with --test, also the other QEMU (the suite boots both), what the test suite judges
#      images with (sleuthkit, makefs, e2fsprogs, xz, zstd) and builds its test kernels with
#      (gcc, gcc-multilib on x86_64 hosts, binutils, binutils-aarch64-linux-gnu) and reads
#      kernels with (gdb);
#   2. a virtualenv ($MKSMOLNB_VENV, default .venv) with mksmolnb installed from this
#      checkout (plus its test extras with --test).
# Everything after step 1 runs as you. Usage: ./setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")"

tests=0
[ "${1:-}" = --test ] && tests=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# program → Debian package
declare -A NEED=([bwrap]=bubblewrap)
# The QEMU of the host's own CPU. Booting the other architecture's guests (aarch64 on an
# amd64 host, under TCG) needs the other one: startnb names its package when it is missing.
case "$(uname -m)" in
  aarch64|arm64) NEED+=([qemu-system-aarch64]=qemu-system-arm) ;;
  *) NEED+=([qemu-system-x86_64]=qemu-system-x86) ;;
esac
if [ $tests = 1 ]; then
  NEED+=([qemu-system-x86_64]=qemu-system-x86 [qemu-system-aarch64]=qemu-system-arm
         [fls]=sleuthkit [makefs]=makefs [e2fsck]=e2fsprogs [debugfs]=e2fsprogs [gcc]=gcc
         [ld]=binutils [xz]=xz-utils [zstd]=zstd [setpriv]=util-linux
         [aarch64-linux-gnu-as]=binutils-aarch64-linux-gnu [gdb]=gdb)
  # Not gcc-aarch64-linux-gnu: Debian makes it conflict with gcc-multilib (apt would remove
  # gcc-multilib); the aarch64 test kernels are assembly, binutils is all they need.
fi
missing=()
for prog in "${!NEED[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 || missing+=("${NEED[$prog]}")
done
# 32-bit test kernels and fixtures need gcc's multilib support: an x86_64 package only
# (Debian has none on arm64, where those kernels skip saying so).
if [ $tests = 1 ] && [ "$(uname -m)" = x86_64 ] && ! echo 'int main(void){return 0;}' \
    | gcc -m32 -x c -o /dev/null - >/dev/null 2>&1; then
  missing+=(gcc-multilib)
fi
# An independent reader of Berkeley DB 1.85 hash files (the image's /etc/pwd.db).
if [ $tests = 1 ] && ! ls /lib/libdb1.so.2 /usr/lib/*/libdb1.so.2 >/dev/null 2>&1; then
  missing+=(libdb1-compat)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "setup.sh: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

VENV=${MKSMOLNB_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
target=.
[ $tests = 1 ] && target='.[test]'
# compat: the checkout on sys.path through a .pth line, no import hook at each start.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  --config-settings editable_mode=compat -e "$target"
