#!/usr/bin/env bash
# The determinism contract of docs/concepts.md, end to end: two builds of the
# command line (e.g. -O3 and -O1 with sanitizers, same instruction set) run
# every recipe of the mergekit conformance set and the solver-based recipes
# in tests/cli/determinism, A with one thread and B with two, both with two
# BLAS threads, and must write byte-identical tensors.
#
#   determinism_test.sh XMERGE_A XMERGE_B SCRATCH_DIR
set -uo pipefail
a=$(realpath "$1")
b=$(realpath "$2")
repo=$(realpath "$(dirname "$0")/../..")
scratch=$(realpath -m "$3")
rm -rf "$scratch" && mkdir -p "$scratch" || exit 1
cd "$repo/tests/data/conformance" || exit 1
passed=0
failed=0
for recipe in recipes/*.yml "$repo"/tests/cli/determinism/*.yml; do
    name=$(basename "$recipe" .yml)
    "$a" run "$recipe" "$scratch/$name.a" -j 1 --blas-threads 2 --no-progress >"$scratch/$name.a.log" 2>&1
    rc_a=$?
    "$b" run "$recipe" "$scratch/$name.b" -j 2 --blas-threads 2 --no-progress >"$scratch/$name.b.log" 2>&1
    rc_b=$?
    if [ $rc_a -ne $rc_b ]; then
        failed=$((failed + 1))
        echo "FAIL $name: exit $rc_a with A, $rc_b with B"
        continue
    fi
    if [ $rc_a -ne 0 ]; then
        continue  # refused by both (the set's error cases)
    fi
    differing=""
    count=0
    for f in "$scratch/$name.a"/*.safetensors; do
        count=$((count + 1))
        cmp -s "$f" "$scratch/$name.b/$(basename "$f")" || differing+=" $(basename "$f")"
    done
    if [ $count -eq 0 ] || [ -n "$differing" ]; then
        failed=$((failed + 1))
        echo "FAIL $name: ${differing:-no tensors written}"
    else
        passed=$((passed + 1))
    fi
    rm -rf "$scratch/$name.a" "$scratch/$name.b"
done
echo "$passed recipes byte-identical, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
