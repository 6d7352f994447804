#!/usr/bin/env bash
# Install, build the patched runtime (and the stock llama.cpp it is compared with), then run
# the whole test suite against the real build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
ggufsparse build-runtime --stock
# the suite writes model files of a few hundred MB each (deleted as it goes: about 3 GB at a time)
echo "test.sh: free space for temporary files: $(df -h "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')"
set +e
# one test file per worker (module fixtures are built once), two workers by default: much of the
# suite is single-threaded Python (conversion, reference forwards) beside llama.cpp processes
python -m pytest -ra --durations=30 -n "${GGUFSPARSE_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
