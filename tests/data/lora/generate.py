#!/usr/bin/env python3
"""Writes the PEFT interoperability data of the LoRA tests.

Run once with torch, transformers and peft installed:

    python tests/data/lora/generate.py tests/data/lora

For each case it builds a tiny model, wraps it with peft's own LoRA layers,
gives every adapter parameter non-trivial values, saves the adapter with
`save_pretrained` (adapter_config.json + adapter_model.safetensors), and
saves what peft's `merge_and_unload` makes of the base model as
`expected.safetensors`. The base models are saved once per architecture.
The tests read these files with xmerge alone.
"""
import json
import os
import sys

import torch
import torch.nn as nn
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers.pytorch_utils import Conv1D


class Attention(nn.Module):
    def __init__(self, hidden, kv):
        super().__init__()
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, kv, bias=False)
        self.v_proj = nn.Linear(hidden, kv, bias=True)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)


class Mlp(nn.Module):
    def __init__(self, hidden, inner):
        super().__init__()
        self.up_proj = nn.Linear(hidden, inner, bias=True)
        self.down_proj = nn.Linear(inner, hidden, bias=False)


class Layer(nn.Module):
    def __init__(self, hidden, kv, inner):
        super().__init__()
        self.self_attn = Attention(hidden, kv)
        self.mlp = Mlp(hidden, inner)
        self.input_layernorm = nn.LayerNorm(hidden)


class Decoder(nn.Module):
    def __init__(self, vocab, hidden, kv, inner, layers):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([Layer(hidden, kv, inner) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)


class TinyLlama(nn.Module):
    """Names and layouts of a Llama-style causal LM, at toy size (odd extents catch transposed indexing)."""

    def __init__(self):
        super().__init__()
        self.model = Decoder(vocab=30, hidden=12, kv=8, inner=20, layers=2)
        self.lm_head = nn.Linear(12, 30, bias=False)


class TinyGpt2Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Module()
        self.attn.c_attn = Conv1D(36, 12)  # weight stored [in, out]
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(20, 12)


class TinyGpt2(nn.Module):
    """GPT-2's Conv1D layers, whose weights are stored [in, out] (peft's fan_in_fan_out)."""

    def __init__(self):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.h = nn.ModuleList([TinyGpt2Block()])


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Module()
        self.features.conv = nn.Conv2d(3, 5, 3)


ARCHITECTURES = {"llama": TinyLlama, "gpt2": TinyGpt2, "conv": TinyConv}

# name -> (architecture, dtype, LoraConfig arguments)
CASES = {
    "lora": ("llama", torch.float32, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])),
    "rslora": ("llama", torch.float32, dict(r=8, lora_alpha=4, use_rslora=True, lora_bias=True, target_modules=["v_proj", "up_proj"])),
    "patterns": (
        "llama",
        torch.float32,
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "up_proj"],
            rank_pattern={"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
            alpha_pattern={"q_proj": 3, r"model\.layers\.0\.mlp\.up_proj": 16},
        ),
    ),
    "dora": ("llama", torch.float32, dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"])),
    "embedding_saved": (
        "llama",
        torch.float32,
        dict(r=3, lora_alpha=6, target_modules=["embed_tokens", "k_proj"], modules_to_save=["lm_head", "norm"]),
    ),
    "fan_in_fan_out": ("gpt2", torch.float32, dict(r=4, lora_alpha=8, fan_in_fan_out=True, target_modules=["c_attn", "c_fc"])),
    "dora_fan_in_fan_out": ("gpt2", torch.float32, dict(r=2, lora_alpha=5, fan_in_fan_out=True, use_dora=True, target_modules=["c_attn"])),
    "conv": ("conv", torch.float32, dict(r=2, lora_alpha=4, use_dora=True, target_modules=["conv"])),
    "bf16": ("llama", torch.bfloat16, dict(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"])),
}


def base_model(arch, dtype):
    torch.manual_seed(1234)
    return ARCHITECTURES[arch]().to(dtype)


def randomize_adapter(model, seed):
    """Non-zero values for every trainable adapter tensor (peft starts B at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "lora_magnitude_vector" in name:
                p.mul_((1.0 + 0.2 * noise).to(p.dtype))
            elif "modules_to_save" in name:
                p.add_((0.1 * noise).to(p.dtype))
            else:
                p.copy_((0.3 * noise).to(p.dtype))


def main(out):
    os.makedirs(out, exist_ok=True)
    for arch in ARCHITECTURES:
        for dtype, suffix in ((torch.float32, ""), (torch.bfloat16, "_bf16")):
            if dtype == torch.bfloat16 and arch != "llama":
                continue
            path = os.path.join(out, f"base_{arch}{suffix}")
            os.makedirs(path, exist_ok=True)
            save_file({k: v.contiguous() for k, v in base_model(arch, dtype).state_dict().items()}, os.path.join(path, "model.safetensors"))
    notes = {}
    for seed, (name, (arch, dtype, args)) in enumerate(CASES.items()):
        # The adapter keeps the base's dtype (peft would otherwise hold bf16 adapters in float32).
        model = get_peft_model(base_model(arch, dtype), LoraConfig(init_lora_weights=False, **args), autocast_adapter_dtype=False)
        randomize_adapter(model, 100 + seed)
        path = os.path.join(out, name)
        model.save_pretrained(path)
        os.remove(os.path.join(path, "README.md"))  # a model card template, not data
        folded = model.merge_and_unload()
        save_file({k: v.contiguous() for k, v in folded.state_dict().items()}, os.path.join(path, "expected.safetensors"))
        notes[name] = {"base": f"base_{arch}{'_bf16' if dtype == torch.bfloat16 else ''}", "lora_config": {k: v for k, v in args.items()}}
    import peft
    import transformers

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(
            {"generated_with": {"torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__}, "cases": notes},
            f,
            indent=2,
            sort_keys=True,
        )
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
