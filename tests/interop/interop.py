#!/usr/bin/env python3
"""Interoperability with the reference `safetensors` package.

    interop.py XMERGE_BINARY SCRATCH_DIR

1. Files written by the Python package (every dtype numpy can hold, plus
   bfloat16 through ml_dtypes when present, metadata, a sharded checkpoint
   with an index) are read by xmerge and rewritten; the package reads
   xmerge's files back with identical bytes and metadata.
2. A task-arithmetic merge of Python-written checkpoints through
   `xmerge run` equals the same formula computed with numpy.

Prints "SKIPPED: ..." and exits 0 when numpy or safetensors is missing.
"""

import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIPPED: the Python packages numpy and safetensors are needed ({e}); scripts/install-deps installs them")
    sys.exit(0)

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None

XMERGE, SCRATCH = sys.argv[1], sys.argv[2]
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print("FAIL", what)


def xmerge(*args, expect=0):
    r = subprocess.run([XMERGE, *args], capture_output=True, text=True)
    if r.returncode != expect:
        print(r.stdout, r.stderr)
    check(r.returncode == expect, f"xmerge {' '.join(args)} exited {r.returncode}, expected {expect}")
    return r


def load_checkpoint(path):
    """All tensors and the metadata of a file or a directory (index or single file), via the package."""
    files = []
    if os.path.isdir(path):
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
        else:
            files = [os.path.join(path, "model.safetensors")]
    else:
        files = [path]
    tensors, metadata = {}, {}
    for file in files:
        with safe_open(file, framework="np") as f:
            metadata.update(f.metadata() or {})
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    return tensors, metadata


shutil.rmtree(SCRATCH, ignore_errors=True)
os.makedirs(SCRATCH)
rng = np.random.default_rng(7)

# 1. every dtype, through xmerge's reader and writer
dtypes = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32, np.uint64]
original = {}
for dt in dtypes:
    if np.issubdtype(dt, np.floating):
        original[f"t.{np.dtype(dt).name}"] = rng.standard_normal((3, 5)).astype(dt)
    else:
        info = np.iinfo(dt)
        original[f"t.{np.dtype(dt).name}"] = rng.integers(info.min, info.max, size=(4, 3), dtype=dt, endpoint=True)
original["t.bool"] = rng.integers(0, 2, size=(7,)).astype(np.bool_)
original["t.scalar"] = np.array(3.5, dtype=np.float32)
original["t.empty"] = np.zeros((0, 3), dtype=np.float32)
if ml_dtypes is not None:
    original["t.bfloat16"] = rng.standard_normal((6, 2)).astype(ml_dtypes.bfloat16)
else:
    print("note: ml_dtypes is missing; bfloat16 files are not written from Python")
os.makedirs(os.path.join(SCRATCH, "py"))
save_file(original, os.path.join(SCRATCH, "py", "model.safetensors"), metadata={"format": "pt", "origin": "python"})

xmerge("info", os.path.join(SCRATCH, "py", "model.safetensors"))
xmerge("reshard", os.path.join(SCRATCH, "py"), os.path.join(SCRATCH, "copied"), "--shard-size", "200B")
copied, meta = load_checkpoint(os.path.join(SCRATCH, "copied"))
check(meta.get("origin") == "python" and meta.get("format") == "pt", f"metadata kept: {meta}")
check(set(copied) == set(original), "same tensor names after the round trip")
check(len([f for f in os.listdir(os.path.join(SCRATCH, "copied")) if f.endswith(".safetensors")]) > 1, "the copy is sharded")
for name, value in original.items():
    got = copied.get(name)
    check(got is not None and got.dtype == value.dtype and got.shape == value.shape and got.tobytes() == value.tobytes(),
          f"{name}: identical dtype, shape and bytes after xmerge")

# xmerge converts float tensors; the package reads the conversion
xmerge("reshard", os.path.join(SCRATCH, "py"), os.path.join(SCRATCH, "as_f16"), "--dtype", "float16")
as_f16, _ = load_checkpoint(os.path.join(SCRATCH, "as_f16"))
check(as_f16["t.float32"].dtype == np.float16 and np.array_equal(as_f16["t.float32"], original["t.float32"].astype(np.float16)),
      "float32 -> float16 conversion rounds like numpy")
check(as_f16["t.int64"].dtype == np.int64 and np.array_equal(as_f16["t.int64"], original["t.int64"]), "integers are not converted")

# 2. a merge of Python-written checkpoints, one of them sharded by hand with an index
shape = {"model.embed_tokens.weight": (64, 16), "model.layers.0.mlp.weight": (48, 16), "model.layers.1.mlp.weight": (48, 16), "lm_head.weight": (64, 16)}
models = {}
for name in ["base", "a", "b"]:
    models[name] = {k: rng.standard_normal(s).astype(np.float32) for k, s in shape.items()}
    d = os.path.join(SCRATCH, name)
    os.makedirs(d)
    if name == "b":
        keys = list(shape)
        weight_map = {}
        for i, part in enumerate([keys[:2], keys[2:]]):
            file = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({k: models[name][k] for k in part}, os.path.join(d, file), metadata={"format": "pt"})
            weight_map.update({k: file for k in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": sum(v.nbytes for v in models[name].values())}, "weight_map": weight_map}, f)
    else:
        save_file(models[name], os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "toy", "num_hidden_layers": 2}, f)

recipe = os.path.join(SCRATCH, "recipe.yml")
with open(recipe, "w") as f:
    f.write(f"""merge_method: task_arithmetic
base_model: {SCRATCH}/base
models:
  - model: {SCRATCH}/a
    parameters:
      weight: 0.75
  - model: {SCRATCH}/b
    parameters:
      weight: [0.25, 0.5]
parameters:
  lambda: 0.8
""")
r = xmerge("run", recipe, os.path.join(SCRATCH, "merged"), "--shard-size", "5kB", "-j", "2")
check("tensors   4 (4 merged, 0 copied)" in r.stdout, "the summary counts the tensors")
merged, meta = load_checkpoint(os.path.join(SCRATCH, "merged"))
check(meta.get("merge_method") == "task_arithmetic", "the output names its method in the metadata")
check(os.path.exists(os.path.join(SCRATCH, "merged", "config.json")), "config.json copied from the base")
# Gradients run across the layers; outside them (embeddings and head alike) they take the first value, as mergekit plans them.
positions = {"model.embed_tokens.weight": 0.0, "model.layers.0.mlp.weight": 0.0, "model.layers.1.mlp.weight": 1.0, "lm_head.weight": 0.0}
for name in shape:
    base, a, b = (models[m][name] for m in ("base", "a", "b"))
    wb = 0.25 + 0.25 * positions[name]
    expected = base + np.float32(0.8) * (np.float32(0.75) * (a - base) + np.float32(wb) * (b - base))
    got = merged[name]
    check(got.dtype == np.float32 and got.shape == expected.shape and np.allclose(got, expected, rtol=1e-6, atol=1e-6),
          f"{name}: xmerge's merge equals numpy's (max error {np.max(np.abs(got - expected)):.3g})")

if ml_dtypes is not None:
    xmerge("run", recipe, os.path.join(SCRATCH, "merged_bf16"), "--out-dtype", "bfloat16")
    merged16, _ = load_checkpoint(os.path.join(SCRATCH, "merged_bf16"))
    for name in shape:
        got = merged16[name]
        check(got.dtype == ml_dtypes.bfloat16 and np.array_equal(got, merged[name].astype(ml_dtypes.bfloat16)),
              f"{name}: bfloat16 output is the float32 result rounded to nearest even")

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
