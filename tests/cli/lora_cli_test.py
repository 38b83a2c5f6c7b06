#!/usr/bin/env python3
"""The adapter commands of the xmerge command line against peft's own numbers.

    lora_cli_test.py XMERGE_BINARY LORA_DATA_DIR SCRATCH_DIR

LORA_DATA_DIR is tests/data/lora: adapters saved by peft and, for each,
`expected.safetensors`, the state dict of peft's merge_and_unload(). Checks
`xmerge lora fold | extract | merge` and recipes whose models are
`MODEL+ADAPTER` references (folded through a cache, as mergekit does), with
numpy as the oracle for the arithmetic around peft's folds.

Prints "SKIPPED: ..." and exits 0 when numpy or safetensors is missing.
"""

import json
import os
import shutil
import struct
import subprocess
import sys

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIPPED: the Python packages numpy and safetensors are needed ({e}); scripts/install-deps installs them")
    sys.exit(0)

XMERGE, DATA, SCRATCH = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3]
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
        print("PASS", what)
    else:
        failures.append(what)
        print("FAIL", what)


def xmerge(*args, expect=0):
    r = subprocess.run([XMERGE, *args], capture_output=True, text=True)
    if r.returncode != expect:
        print(r.stdout, r.stderr)
    check(r.returncode == expect, f"xmerge {' '.join(args)} exits {expect}")
    return r


def data(*parts):
    return os.path.join(DATA, *parts)


def weights(path):
    """Tensors of a checkpoint file or a single-file directory, as float64."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    return {k: v.astype(np.float64) for k, v in load_file(path).items()}


def header_dtypes(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def close(a, b, tolerance=2e-5):
    """Same names and shapes, every value within tolerance relative to the largest magnitude."""
    if a.keys() != b.keys():
        print("names differ:", sorted(set(a) ^ set(b))[:5])
        return False
    for k in a:
        if a[k].shape != b[k].shape:
            print(k, "shape", a[k].shape, b[k].shape)
            return False
        scale = max(1.0, float(np.abs(b[k]).max(initial=0.0)))
        err = float(np.abs(a[k] - b[k]).max(initial=0.0))
        if err > tolerance * scale:
            print(k, "max error", err)
            return False
    return True


def no_leftovers(directory="."):
    return not [n for n in os.listdir(directory) if n.startswith(".")]


shutil.rmtree(SCRATCH, ignore_errors=True)
os.makedirs(SCRATCH)
os.chdir(SCRATCH)

base = weights(data("base_llama"))
lora = weights(data("lora", "expected.safetensors"))
patterns = weights(data("patterns", "expected.safetensors"))

# fold: peft's merge_and_unload, for plain LoRA, DoRA and GPT-2's Conv1D layout.
for case, model in [("lora", "base_llama"), ("dora", "base_llama"), ("fan_in_fan_out", "base_gpt2")]:
    xmerge("lora", "fold", data(model), data(case), "fold_" + case, "--no-progress")
    check(close(weights("fold_" + case), weights(data(case, "expected.safetensors"))), f"lora fold {case} equals peft's merge_and_unload")

# extract at the adapter's rank reproduces the fine-tune; the adapter is PEFT's format.
xmerge("lora", "extract", data("base_llama"), data("lora", "expected.safetensors"), "extracted", "--rank", "4", "--no-progress")
config = json.load(open("extracted/adapter_config.json"))
check(config.get("peft_type") == "LORA" and config.get("r") == 4, "lora extract writes a PEFT adapter_config.json with r 4")
xmerge("lora", "fold", data("base_llama"), "extracted", "refolded", "--no-progress")
check(close(weights("refolded"), lora), "fold(extract(fine-tune)) reproduces the fine-tune")
xmerge("lora", "extract", data("base_llama"), data("lora", "expected.safetensors"), "bad", "--no-progress", expect=1)
check(not os.path.exists("bad"), "lora extract without --rank or --energy fails and writes nothing")

# merge into the model: base + sum w_i (fold_i - base).
soup = {k: base[k] + 0.3 * (lora[k] - base[k]) + 0.7 * (patterns[k] - base[k]) for k in base}
xmerge("lora", "merge", data("base_llama"), "soup_model", data("lora"), data("patterns"), "--to", "model", "--weights", "0.3", "0.7", "--no-progress")
check(close(weights("soup_model"), soup), "lora merge --to model is the weighted sum of the folded updates")
# merge into an adapter: at rank 16 (at least the sum of the two adapters' ranks) nothing is lost.
xmerge("lora", "merge", data("base_llama"), "soup_adapter", data("lora"), data("patterns"), "--weights", "0.3", "0.7", "--rank", "16", "--no-progress")
xmerge("lora", "fold", data("base_llama"), "soup_adapter", "soup_refolded", "--no-progress")
check(close(weights("soup_refolded"), soup), "lora merge --to adapter at rank 16 folds to the same model")
xmerge("lora", "merge", data("base_llama"), "bad", data("lora"), "--method", "mean", expect=1)
check(not os.path.exists("bad"), "an unknown merge method fails and writes nothing")

# Recipes with MODEL+ADAPTER references.
recipe = f"""merge_method: task_arithmetic
base_model: {data('base_llama')}
models:
  - model: {data('base_llama')}+{data('lora')}
    parameters: {{weight: 0.3}}
  - model: {data('base_llama')}+{data('patterns')}
    parameters: {{weight: 0.7}}
dtype: float32
"""
open("adapters.yml", "w").write(recipe)
xmerge("run", "adapters.yml", "merged", "--no-progress")
check(close(weights("merged"), soup), "a recipe over MODEL+ADAPTER references merges the folded models")
check(no_leftovers(), "the temporary folds are removed after the run")

r = xmerge("run", "adapters.yml", "cached", "--no-progress", "--lora-merge-cache", "cache")
check(len(os.listdir("cache")) == 2 and r.stderr.count("xmerge: folded") == 2, "--lora-merge-cache keeps one fold per adapter")
r = xmerge("run", "adapters.yml", "cached2", "--no-progress", "--lora-merge-cache", "cache")
check(r.stderr.count("reused the fold") == 2 and close(weights("cached2"), soup), "a second run reuses the cached folds")

r = xmerge("run", "adapters.yml", "half", "--no-progress", "--lora-merge-cache", "cache16", "--lora-merge-dtype", "bfloat16")
folded = [os.path.join("cache16", d, "model.safetensors") for d in os.listdir("cache16")]
check(len(folded) == 2 and all(header_dtypes(f) == {"BF16"} for f in folded), "--lora-merge-dtype bfloat16 folds to bfloat16")

xmerge("run", "adapters.yml", "dry", "--no-progress", "--dry-run")
check(not os.path.exists("dry") and no_leftovers(), "--dry-run folds into a temporary directory and leaves nothing")

# An adapter that does not fit its model, and one that does not exist: clear errors, nothing left.
open("misfit.yml", "w").write(recipe.replace(f"{data('base_llama')}+{data('lora')}", f"{data('base_gpt2')}+{data('lora')}"))
r = xmerge("run", "misfit.yml", "misfit", "--no-progress", expect=1)
check("lora" in r.stderr and not os.path.exists("misfit") and no_leftovers(), "an adapter for another model fails naming the adapter, nothing left")
open("missing.yml", "w").write(recipe.replace(f"+{data('lora')}", f"+{data('no_such_adapter')}"))
r = xmerge("run", "missing.yml", "missing", "--no-progress", expect=1)
check("no_such_adapter" in r.stderr and not os.path.exists("missing") and no_leftovers(), "a missing adapter fails naming it, nothing left")

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
