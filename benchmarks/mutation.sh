#!/usr/bin/env bash
# Mutation score of rf2's core modules with mutmut (pinned below), one module at a time.
#
#   benchmarks/mutation.sh [MODULE ...]          # default: the core modules, in priority order
#   benchmarks/mutation.sh optimizations/compression.py rf2/store.py
#
# Runs in a fresh copy of the committed HEAD (git archive; never in the working tree you edit),
# mutates only the given module and runs only the test files that cover it (TESTS below), with one
# torch thread per test process. Prints killed/total per module and every mutant not killed.
# Environment: PYTHON (default .venv/bin/python), WORK (default /tmp/rf2-mutation-<commit>),
# JOBS (parallel mutants, default 2), KEEP=1 keeps each copy (to read a survivor:
# cd $WORK/<module> && $PYTHON -m mutmut show NAME).
# Not part of CI: a full run takes tens of minutes (see benchmarks/MUTATION.md).
set -euo pipefail

MUTMUT_VERSION=3.8.1
REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
JOBS=${JOBS:-2}
SHA=$(git -C "$REPO" rev-parse HEAD)
WORK=${WORK:-/tmp/rf2-mutation-${SHA:0:10}}

# module -> the test files (or FILE::TEST node ids, or pytest options such as --deselect=...) that exercise it.
# store.py leaves out test_sweep's CLI sweep (42 s of its 80, run for every surviving mutant).
declare -A TESTS=(
  [optimizations/compression.py]="tests/test_compression.py tests/test_compression_edges.py tests/test_compression_mutants.py"
  [tier_mapping/dirichlet.py]="tests/test_tier_mapping.py tests/test_dirichlet_edges.py"
  [rf2/evaluation/metrics.py]="tests/test_metrics.py tests/test_metrics_edges.py"
  [rf2/aggregation/__init__.py]="tests/test_fedavg.py tests/test_compression.py tests/test_round_upload.py tests/test_aggregation_edges.py"
  [rf2/results.py]="tests/test_sweep.py tests/test_store.py tests/test_uncertainty.py tests/test_damaged_results.py tests/test_results_edges.py tests/test_results_mutants.py"
  [rf2/store.py]="tests/test_store.py tests/test_store_links.py tests/test_damaged_results.py tests/test_store_mutants.py tests/test_sweep.py --deselect=tests/test_sweep.py::test_cli_sweep_and_plot tests/test_executors.py::test_old_results_directories_are_detected_not_misread tests/test_executors.py::test_format2_runs_are_relabelled_with_the_old_defaults_and_never_mix_with_new_ones"
)
DEFAULT=(optimizations/compression.py tier_mapping/dirichlet.py rf2/evaluation/metrics.py
         rf2/aggregation/__init__.py rf2/results.py rf2/store.py)
MODULES=("$@")
[ ${#MODULES[@]} -eq 0 ] && MODULES=("${DEFAULT[@]}")

if [ "$("$PYTHON" -m pip show mutmut 2>/dev/null | sed -n 's/^Version: //p')" != "$MUTMUT_VERSION" ]; then
  "$PYTHON" -m pip install -q "mutmut==$MUTMUT_VERSION"
fi

mkdir -p "$WORK"
summary=()
for mod in "${MODULES[@]}"; do
  tests=${TESTS[$mod]:-}
  [ -n "$tests" ] || { echo "no test files known for $mod; add it to TESTS in $0" >&2; exit 2; }
  dir=$WORK/$(echo "$mod" | tr '/.' '__')
  rm -rf "$dir" && mkdir -p "$dir"
  git -C "$REPO" archive "$SHA" | tar -x -C "$dir"
  existing=""
  for t in $tests; do
    case $t in -*) existing="$existing \"$t\",";; *) [ -f "$dir/${t%%::*}" ] && existing="$existing \"$t\",";; esac
  done
  # mutmut reads its settings from pyproject.toml; this one lives only in the throwaway copy
  cat >>"$dir/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["rf2", "optimizations", "tier_mapping"]
only_mutate = ["$mod"]
pytest_add_cli_args_test_selection = [${existing%,} ]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
process_isolation = "forkserver"
timeout_multiplier = 5.0
timeout_constant = 30.0
use_git_change_detection = false
EOF
  echo "== $mod  (tests:$tests; commit ${SHA:0:10})"
  start=$(date +%s)
  (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PYTHON" -m mutmut run --max-children "$JOBS" >"$dir/mutmut.log" 2>&1) || true
  (cd "$dir" && "$PYTHON" -m mutmut results --all true >"$dir/results.txt" 2>&1) || true
  secs=$(( $(date +%s) - start ))
  total=$(grep -c ': ' "$dir/results.txt" || true)
  killed=$(grep -c -E ': (killed|timeout)$' "$dir/results.txt" || true)
  echo "$mod: killed $killed / $total in ${secs}s"
  grep -v -E ': (killed|timeout)$' "$dir/results.txt" | sed 's/^ */    /' || true
  summary+=("$mod  killed $killed/$total")
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
done
echo "== mutation score (mutmut $MUTMUT_VERSION, commit ${SHA:0:10})"
printf '%s\n' "${summary[@]}"
