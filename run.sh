#!/usr/bin/env bash
# One entry point that sets itself up: installs uv when missing, syncs the locked
# environment, then runs the demo (the main job) or the test suite.
#   bash run.sh demo [demo options]     the whole method on built-in data
#   bash run.sh test [pytest options]   the test suite
#   bash run.sh <any vprdistill command> ...
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v uv >/dev/null 2>&1; then
    export PATH="$HOME/.local/bin:$PATH"
    if ! command -v uv >/dev/null 2>&1; then
        echo "run.sh: installing uv with pip" >&2
        python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
    fi
fi

# Every extra but `gpu` (onnxruntime-gpu replaces onnxruntime's module files): the demo writes
# its report with `report`, and the tests cover every feature.
uv sync --locked --extra segment --extra export --extra serve --extra report --quiet

command="${1:-demo}"
shift || true
case "$command" in
    test)
        # Lint and format check first: a style error fails fast, before the 10-minute suite.
        uv run --locked --no-sync ruff check vprdistill tests benchmarks
        uv run --locked --no-sync ruff format --check vprdistill tests benchmarks
        exec uv run --locked --no-sync pytest "$@"
        ;;
    *)
        exec uv run --locked --no-sync vprdistill "$command" "$@"
        ;;
esac
