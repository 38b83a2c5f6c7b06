#!/usr/bin/env bash
# xmerge-mpi against xmerge run: the same bytes for 1, 2 and 3 ranks, and a
# failure of any one rank leaves neither the output nor a staging directory.
#
#   merge_test.sh XMERGE XMERGE_MPI SCRATCH_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
xmerge=$(realpath "$1")
xmerge_mpi=$(realpath "$2")
scratch=$3
mpiexec=$4
shift 4
flags=("$@")
# Open MPI passes environment variables on when named with -x (MPICH passes them all).
if "$mpiexec" --version 2>/dev/null | grep -q "Open MPI"; then
    flags+=(-x XMERGE_MPI_FAIL_RANK)
fi
rm -rf "$scratch" && mkdir -p "$scratch" && cd "$scratch" || exit 1
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }
# ranks, then xmerge-mpi's arguments; XMERGE_MPI_FAIL_RANK is passed on when set.
mpi() {
    local n=$1
    shift
    XMERGE_MPI_FAIL_RANK=${XMERGE_MPI_FAIL_RANK:-} "$mpiexec" -n "$n" "${flags[@]}" "$xmerge_mpi" "$@"
}
no_leftovers() { ! find . -name '.*partial-*' | grep -q .; }

"$xmerge" make-demo models --models 3 --layers 3 --hidden 64 --intermediate 128 --vocab 256 >/dev/null || fail "make-demo"

cat > task_arithmetic.yml <<'YAML'
merge_method: task_arithmetic
base_model: models/base
models:
  - model: models/base
  - model: models/math
    parameters: {weight: 0.6}
  - model: models/code
    parameters:
      weight: [0.2, 0.8]
parameters:
  lambda: 0.9
dtype: float32
YAML
# Random drops: each tensor draws from its own stream, whichever rank computes it.
cat > dare_ties.yml <<'YAML'
merge_method: dare_ties
base_model: models/base
models:
  - model: models/math
    parameters: {weight: 0.5, density: 0.6}
  - model: models/code
    parameters: {weight: 0.5, density: 0.4}
dtype: bfloat16
YAML
# A whole-model statistic (the Fisher norms) summed over every rank's tensors.
cat > fisher.yml <<'YAML'
merge_method: fisher
models:
  - model: models/math
    extra: {fisher: models/code}
  - model: models/chat
    extra: {fisher: models/base}
parameters:
  normalize_fisher_weight: true
dtype: float32
YAML
# Layer stacking: tensors copied, none merged.
cat > passthrough.yml <<'YAML'
merge_method: passthrough
slices:
  - sources:
      - model: models/math
        layer_range: [0, 2]
  - sources:
      - model: models/code
        layer_range: [1, 3]
dtype: float16
YAML

for recipe in task_arithmetic dare_ties fisher passthrough; do
    mkdir -p "single/$recipe"
    if ! "$xmerge" run "$recipe.yml" "single/$recipe/out" --no-progress --shard-size 40kB -j 1 --seed 5 >/dev/null; then
        fail "$recipe: xmerge run"
        continue
    fi
    shards=$(ls "single/$recipe/out"/*.safetensors | wc -l)
    for n in 1 2 3; do
        mkdir -p "np$n/$recipe"
        if mpi "$n" "$recipe.yml" "np$n/$recipe/out" --shard-size 40kB -j 1 --seed 5 --quiet && diff -r "single/$recipe/out" "np$n/$recipe/out" >/dev/null; then
            pass "$recipe: $n rank(s) write the bytes of xmerge run ($shards shards)"
        else
            fail "$recipe: $n rank(s) differ from xmerge run"
        fi
    done
done

# One rank fails (after its first tensor, or during the statistics pass of fisher): all stop, nothing is left.
for case in "3 0 task_arithmetic" "3 1 task_arithmetic" "3 2 fisher" "2 1 dare_ties"; do
    read -r n rank recipe <<<"$case"
    err=$(XMERGE_MPI_FAIL_RANK=$rank mpi "$n" "$recipe.yml" failed/out --shard-size 40kB -j 1 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 0 ] && grep -qF "rank $rank of $n: failure injected" <<<"$err" && [ ! -e failed/out ] && no_leftovers; then
        pass "rank $rank of $n failing in $recipe: error names it, no output, no staging directory"
    else
        fail "rank $rank of $n failing in $recipe (exit $rc, output $(ls -a failed 2>&1 | tr '\n' ' '), stderr: $err)"
    fi
done

# Refusals before anything is written: a non-empty output, a model missing.
mkdir -p taken/out && echo keep > taken/out/file
err=$(mpi 2 task_arithmetic.yml taken/out --shard-size 40kB -j 1 2>&1 >/dev/null)
if [ $? -ne 0 ] && grep -q "not empty" <<<"$err" && [ "$(cat taken/out/file)" = keep ] && [ "$(ls -A taken/out)" = file ] && no_leftovers; then
    pass "a non-empty OUT_DIR is refused and left as it was"
else
    fail "non-empty OUT_DIR (stderr: $err)"
fi
sed 's#models/code#models/absent#' task_arithmetic.yml > missing.yml
err=$(mpi 3 missing.yml missing/out -j 1 2>&1 >/dev/null)
if [ $? -ne 0 ] && grep -q "models/absent" <<<"$err" && [ ! -e missing/out ] && no_leftovers; then
    pass "a missing model fails every rank's planning with its path"
else
    fail "missing model (stderr: $err)"
fi
# --overwrite replaces an existing output with the same bytes as a fresh run.
if mpi 2 task_arithmetic.yml taken/out --shard-size 40kB -j 1 --seed 5 --overwrite --quiet && diff -r single/task_arithmetic/out taken/out >/dev/null; then
    pass "--overwrite replaces the output"
else
    fail "--overwrite"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
