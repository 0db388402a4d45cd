#!/usr/bin/env bash
# The README's test command: set up .venv (if needed), lint the Python 3.8 syntax level, run the suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh dev
.venv/bin/ruff check --select E9,F63,F7,F82 --target-version py38 edge tests
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
