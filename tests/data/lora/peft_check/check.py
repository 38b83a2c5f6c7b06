#!/usr/bin/env python3
"""Loads adapters written by xmerge with the real peft and compares peft's
merge_and_unload with xmerge's fold of the same adapter.

    python check.py OUT_DIR      # OUT_DIR as written by write_adapters

The torch model is rebuilt from the base checkpoint's tensor names and
shapes: 2-D "<m>.weight" as nn.Linear (or nn.Embedding for embed_tokens, or
transformers' Conv1D when the adapter says fan_in_fan_out), 4-D as
nn.Conv2d, 1-D-only modules as nn.LayerNorm.
"""
import json
import os
import sys

import torch
import torch.nn as nn
from peft import PeftModel
from safetensors.torch import load_file
from transformers.pytorch_utils import Conv1D


def build(state, fan_in_fan_out):
    root = nn.Module()
    modules = {}
    for name, t in state.items():
        module, param = name.rsplit(".", 1)
        modules.setdefault(module, {})[param] = t
    for module, params in modules.items():
        w = params.get("weight")
        bias = "bias" in params
        if w is None or w.dim() == 1:
            m = nn.LayerNorm(params["bias" if w is None else "weight"].shape[0])
        elif w.dim() == 4:
            m = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), bias=bias)
        elif "embed" in module:
            m = nn.Embedding(w.shape[0], w.shape[1])
        elif fan_in_fan_out:
            m = Conv1D(w.shape[1], w.shape[0])
        else:
            m = nn.Linear(w.shape[1], w.shape[0], bias=bias)
        parent = root
        parts = module.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], m)
    root.load_state_dict(state, strict=True)
    return root.to(next(iter(state.values())).dtype)


def main(out):
    worst = 0.0
    for case in sorted(os.listdir(out)):
        d = os.path.join(out, case)
        config = json.load(open(os.path.join(d, "adapter", "adapter_config.json")))
        base = build(load_file(os.path.join(d, "base", "model.safetensors")), config.get("fan_in_fan_out", False))
        merged = PeftModel.from_pretrained(base, os.path.join(d, "adapter")).merge_and_unload().state_dict()
        folded = load_file(os.path.join(d, "folded", "model.safetensors"))
        diff = max((merged[k].float() - folded[k].float()).abs().max().item() for k in folded)
        scale = max(folded[k].float().abs().max().item() for k in folded)
        worst = max(worst, diff / scale)
        print(f"{case:24s} max |peft - xmerge| = {diff:.3g} (largest value {scale:.3g})")
    print(f"worst relative difference: {worst:.3g}")
    return 0 if worst < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
