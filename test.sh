#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian 12 / Ubuntu machine, then run it:
#   system packages (apt-get, when missing), a virtualenv in .venv with mksmolnb and its
#   test extras, then `ruff check` and `pytest`. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# program-or-file → Debian package
declare -A NEED=(
  [qemu-system-x86_64]=qemu-system-x86
  [fls]=sleuthkit
  [makefs]=makefs
  [e2fsck]=e2fsprogs
  [debugfs]=e2fsprogs
  [gcc]=gcc
  [ld]=binutils
  [bwrap]=bubblewrap
  [xz]=xz-utils
  [zstd]=zstd
  [setpriv]=util-linux
)
missing=()
for prog in "${!NEED[@]}"; do
  command -v "$prog" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 \
    || missing+=("${NEED[$prog]}")
done
# 32-bit test fixtures need gcc's multilib support.
if ! echo 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - >/dev/null 2>&1; then
  missing+=(gcc-multilib)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "test.sh: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${MKSMOLNB_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'

export PATH="$PWD/$VENV/bin:$PATH:/usr/sbin:/sbin"
echo "test.sh: ruff check" >&2
ruff check .
echo "test.sh: pytest" >&2
set +e
python -m pytest "$@"
rc=$?
set -e
# pytest's 5 means no test ran: that is a failure here, never a pass.
exit $rc
