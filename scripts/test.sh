#!/usr/bin/env bash
# The test suite with everything it needs: installs the headless browser the browser tests drive
# (once; a no-op afterwards), then runs every test. Arguments go to `cargo test`.
# SQLite by default; set COVERWATCH_TEST_DATABASE_URL=postgres://… for PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-browser.sh
cargo test --workspace "$@"
