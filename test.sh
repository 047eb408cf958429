#!/usr/bin/env bash
# The test command: set up what the suite needs on a fresh Debian 12 / Ubuntu machine
# (./setup.sh --test: system packages with apt-get, a virtualenv in .venv), then
# `ruff check` and `pytest`. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
VENV=${MKSMOLNB_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH:/usr/sbin:/sbin"
echo "test.sh: ruff check" >&2
ruff check .
echo "test.sh: pytest" >&2
# pytest's exit status is the verdict (5, no test ran, is a failure too).
exec python -m pytest "$@"
