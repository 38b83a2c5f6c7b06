#!/usr/bin/env python3
"""Builds the mergekit conformance set in tests/data/conformance.

Run once with mergekit (and torch, transformers) installed; the output is
committed and the conformance test compares `xmerge run` against it without
any of them:

    python tests/conformance/make_conformance.py

It writes
  models/<name>/      small checkpoints (bfloat16 safetensors, config.json,
                      tokenizer files for the tokenizer cases)
  recipes/<case>.yml  mergekit recipes, model paths relative to the set's root
  expected/<case>/    what mergekit wrote: config.json, tokenizer files, and
                      tensors.json (digests) or model.safetensors
  cases.json          per case: recipe, how to compare, where it comes from

The configurations are those of mergekit's tests (tests/test_basic_merges.py,
tests/test_tokenizer.py) and its examples/*.yml, pointed at local models of
the shapes those tests build (smaller where a test used a full-size model).
Each runs computing in float32 (`dtype: float32`): a digest of each output
tensor's bits and its values rounded to bfloat16 are kept. One per method
family and architecture also runs in the half-precision dtype its test
asks for (the output is kept). Random methods are compared through
statistics of their output (expected/<case> holds no tensors for them).
See README.md for how the test compares.
"""

import copy
import json
import os
import shutil
import sys
import tempfile
import traceback
from importlib.metadata import version

import torch
import transformers
import yaml
from transformers import (
    CLIPVisionConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlamaTokenizerFast,
)

import mergekit.card
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "conformance")
SEED = 20261201
RANDOM_METHODS = {"dare_ties", "dare_linear", "della", "della_linear"}
# Layer copies: their output is their input; digests say all there is to say.
COPIES = {"granite_copy", "gpt2_copy", "gpt2_stack", "example_layer_stack", "passthrough_scale"}
# Configurations also run in bfloat16 as their tests ask: one per method family and architecture.
HALF_PRECISION = {"granite_linear", "linear", "slerp", "nuslerp_base_rw0_fl0", "task_arithmetic", "breadcrumbs", "ties", "model_stock",
                  "sce", "multislerp", "nearswap", "karcher", "vlm_linear", "vlm_ties", "example_ties", "example_gradient_slerp",
                  "example_linear", "example_bio_merge", "tied_mixed_linear"}
KEEP_FILES = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
}


# --------------------------------------------------------------------------
# Models: a common random ancestor per shape, each model the ancestor plus
# its own noise (fine-tunes of one pretrained model), stored in bfloat16.
# --------------------------------------------------------------------------

def perturb(model, seed, scale):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            spread = p.detach().float().std().item() if p.numel() > 1 else 0.0
            spread = spread if spread > 0 else 0.05
            p.add_(torch.randn(p.shape, generator=g) * spread * scale)


def save(model, name):
    # float32, as mergekit's tests save them: no two entries of a task vector
    # tie in magnitude by accident, so magnitude selections are well defined.
    path = os.path.join(ROOT, "models", name)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def family(make, names, seed, scale=0.5, tied=()):
    torch.manual_seed(seed)
    ancestor = make()
    # Norm weights start at one everywhere; give the ancestor its own values.
    perturb(ancestor, seed + 1, 0.0)
    with torch.no_grad():
        for n, p in ancestor.named_parameters():
            if "norm" in n or "ln_" in n:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 2)) * 0.1)
    for i, name in enumerate(names):
        m = copy.deepcopy(ancestor)
        perturb(m, seed + 10 + i, scale)
        if name in tied:
            # A checkpoint with tie_word_embeddings: the head is the input embedding, not stored.
            m.config.tie_word_embeddings = True
            m.lm_head.weight = m.model.embed_tokens.weight
        save(m, name)


def picollama(vocab_size=64, hidden=32, intermediate=48, heads=16, layers=2):
    # mergekit's tests/common.py make_picollama
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                                        num_attention_heads=heads, num_hidden_layers=layers))


def picogranite():
    # mergekit's make_picogranite
    return GraniteForCausalLM(GraniteConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                                            num_key_value_heads=2, num_hidden_layers=2))


def small_gpt2():
    # mergekit's make_gpt2size has GPT-2's 124 M parameters; same 12 layers, narrow.
    return GPT2LMHeadModel(GPT2Config(n_ctx=32, n_embd=16, n_head=2, n_layer=12, n_positions=32, vocab_size=64))


def picollava():
    # mergekit's make_picoLlaVa with a narrower vision tower (64 -> 16 wide).
    vision = CLIPVisionConfig(image_size=16, patch_size=4, num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                              intermediate_size=32)
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=16, num_hidden_layers=2)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_seq_length=16))


def make_tokenizer(vocab_size, added_tokens):
    # mergekit's tests/test_tokenizer.py make_tokenizer
    import tokenizers

    tokens = ["<unk>", "<s>", "</s>"] + [f"_tok_{idx}" for idx in range(3, vocab_size)]
    tokens = tokens[:vocab_size]
    data = {"version": "1.0", "model": {"type": "BPE", "vocab": dict(zip(tokens, range(vocab_size))), "merges": []},
            "added_tokens": []}
    tok = tokenizers.Tokenizer.from_str(json.dumps(data))
    with tempfile.TemporaryDirectory() as p:
        path = os.path.join(p, "tokenizer.json")
        tok.save(path)
        res = LlamaTokenizerFast(tokenizer_file=path)
    res.add_tokens(added_tokens)
    return res


def make_models():
    family(picollama, ["llama_a", "llama_b", "llama_c", "llama_tied"], SEED, tied=("llama_tied",))
    family(lambda: picollama(hidden=16, intermediate=24, heads=4, layers=8), ["deep_a", "deep_b", "deep_c", "deep_d"],
           SEED + 100)
    family(picogranite, ["granite_a", "granite_b"], SEED + 200)
    family(small_gpt2, ["gpt2"], SEED + 300)
    family(picollava, ["llava_a", "llava_b", "llava_c"], SEED + 400)

    # mergekit's tokenizer fixtures: a base (64 tokens), a fine-tune that added
    # two chat tokens (66 embedding rows), and one whose tokenizer lists four
    # tokens past its 64 embedding rows (padding entries it never uses).
    torch.manual_seed(SEED + 500)
    ancestor = picollama(vocab_size=66)
    variants = {"tok_base": (64, []), "tok_chatml": (66, ["<|im_start|>", "<|im_end|>"]),
                "tok_padded": (64, ["<UNUSED_0>", "<UNUSED_1>", "<UNUSED_2>", "<UNUSED_3>"])}
    for i, (name, (rows, added)) in enumerate(variants.items()):
        m = copy.deepcopy(ancestor)
        perturb(m, SEED + 510 + i, 0.5)
        m.resize_token_embeddings(rows)
        path = save(m, name)
        make_tokenizer(64, added).save_pretrained(path)


# --------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------

def two_model(a, b, method, base=None, params=None):
    # mergekit's TestBasicMerges.two_model_config
    cfg = {"merge_method": method, "models": [{"model": a, "parameters": {"weight": 0.6}},
                                               {"model": b, "parameters": {"weight": 0.4}}], "dtype": "bfloat16"}
    if base:
        cfg["base_model"] = base
    if params:
        cfg["parameters"] = params
    return cfg


def m(name):
    return "models/" + name


def basic_cases(prefix, a, b, c, test_prefix, vlm=""):
    # the names of the tests: test_linear_merge, test_linear_VLM_merge, test_nuslerp_merges, ...
    def test(key):
        return test_prefix + key + vlm + ("_merges" if key == "nuslerp" else "_merge")

    cases = {}
    cases[f"{prefix}linear"] = (two_model(a, b, "linear"), test("linear"))
    slerp = two_model(a, b, "slerp", base=a)
    slerp["parameters"] = {"t": 0.35}
    cases[f"{prefix}slerp"] = (slerp, test("slerp"))
    for base in [None, c]:
        for row_wise in [False, True]:
            for flatten in [False, True]:
                name = f"{prefix}nuslerp_{'base' if base else 'nobase'}_rw{int(row_wise)}_fl{int(flatten)}"
                cases[name] = (two_model(a, b, "nuslerp", base=base,
                                         params={"nuslerp_row_wise": row_wise, "nuslerp_flatten": flatten}),
                               test("nuslerp"))
    zero = two_model(a, b, "nuslerp", base=c, params={"nuslerp_row_wise": False, "nuslerp_flatten": False})
    zero["models"][0]["parameters"]["weight"] = -0.5
    zero["models"][1]["parameters"]["weight"] = 0.5
    cases[f"{prefix}nuslerp_zero_sum"] = (zero, test("nuslerp"))
    cases[f"{prefix}task_arithmetic"] = (two_model(a, b, "task_arithmetic", base=c), test("task_arithmetic"))
    cases[f"{prefix}breadcrumbs"] = (two_model(a, b, "breadcrumbs", base=c), test("breadcrumbs"))
    cases[f"{prefix}ties"] = (two_model(a, b, "ties", base=c, params={"density": 0.3}), test("ties"))
    cases[f"{prefix}dare_ties"] = (two_model(a, b, "dare_ties", base=c, params={"density": 0.66}),
                                   test("dare_ties"))
    cases[f"{prefix}model_stock"] = (two_model(b, c, "model_stock", base=a), test("model_stock"))
    cases[f"{prefix}model_stock_filterwise"] = (two_model(b, c, "model_stock", base=a, params={"filter_wise": True}),
                                                test("model_stock_filterwise"))
    return cases


def all_cases():
    a, b, c = m("llama_a"), m("llama_b"), m("llama_c")
    t = "tests/test_basic_merges.py::TestBasicMerges::test_"
    g = "tests/test_basic_merges.py::TestGraniteMerges::test_"
    cases = {}

    ga, gb = m("granite_a"), m("granite_b")
    cases["granite_copy"] = ({"merge_method": "passthrough", "models": [{"model": ga}], "dtype": "bfloat16"},
                             g + "granite_copy")
    cases["granite_linear"] = ({"merge_method": "linear", "models": [{"model": ga, "parameters": {"weight": 0.6}},
                                                                     {"model": gb, "parameters": {"weight": 0.4}}],
                                "dtype": "bfloat16"}, g + "granite_linear_merge")
    cases["granite_slerp"] = ({"merge_method": "slerp", "base_model": ga, "models": [{"model": ga}, {"model": gb}],
                               "parameters": {"t": 0.5}, "dtype": "bfloat16"}, g + "granite_slerp")

    gpt2 = m("gpt2")
    cases["gpt2_copy"] = ({"merge_method": "passthrough", "models": [{"model": gpt2}], "dtype": "bfloat16"},
                          t + "gpt2_copy")
    cases["gpt2_stack"] = ({"merge_method": "passthrough",
                            "slices": [{"sources": [{"model": gpt2, "layer_range": [0, 12]}]}] * 2,
                            "dtype": "bfloat16"}, t + "gpt2_stack")
    cases["passthrough_scale"] = ({"merge_method": "passthrough", "models": [
        {"model": a, "parameters": {"scale": [{"filter": "o_proj", "value": 0}, {"value": 1}]}}]},
        t + "passthrough_scale")

    cases.update(basic_cases("", a, b, c, t))
    cases["sce"] = (two_model(a, b, "sce", base=c, params={"select_topk": 0.5}), t + "sce_merge")
    cases["ram"] = (two_model(a, b, "ram", base=c), t + "ram_merge")
    cases["ramplus_tl"] = (two_model(a, b, "ramplus_tl", base=c, params={"r": 0.05, "alpha": 1.0}),
                           t + "ramplus_tl_merge")
    cases["multislerp"] = (two_model(a, b, "multislerp", base=c), t + "multislerp_merge")
    cases["arcee_fusion"] = (two_model(a, b, "arcee_fusion", base=a), t + "arcee_fusion_merge")
    cases["nearswap"] = (two_model(a, b, "nearswap", base=a, params={"t": 0.0001}), t + "nearswap_merge")
    cases["della"] = (two_model(a, b, "della", base=c, params={"density": 0.66, "epsilon": 0.05, "lambda": 0.5}),
                      t + "della_merge")
    cases["della_invalid_epsilon"] = (two_model(a, b, "della", base=c,
                                                params={"density": 0.66, "epsilon": 1.35, "lambda": 0.5}),
                                      t + "della_invalid_epsilon")
    cases["karcher"] = (two_model(a, b, "karcher", base=c, params={"max_iter": 5, "tol": 1e-5}), t + "karcher_merge")

    # A checkpoint with tied embeddings merged with untied ones (mergekit reads the
    # tied model's embedding as its head): as the reference, and as a model.
    tied = m("llama_tied")
    cases["tied_mixed_linear"] = (two_model(tied, a, "linear"), "tied embeddings (tie_word_embeddings), lm_head optional with tied_names")
    cases["tied_mixed_task_arithmetic"] = (two_model(tied, b, "task_arithmetic", base=c),
                                           "tied embeddings (tie_word_embeddings), lm_head optional with tied_names")

    va, vb, vc = m("llava_a"), m("llava_b"), m("llava_c")
    cases.update(basic_cases("vlm_", va, vb, vc, t, vlm="_VLM"))

    # mergekit's examples/*.yml, the model names replaced by local models.
    da, db, dc, dd = m("deep_a"), m("deep_b"), m("deep_c"), m("deep_d")
    cases["example_ties"] = ({
        "models": [{"model": da, "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
                   {"model": db, "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
                   {"model": dc, "parameters": {"density": 0.33,
                                                "weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}]}}],
        "merge_method": "ties", "base_model": dd, "parameters": {"normalize": True, "int8_mask": True},
        "dtype": "float16"}, "examples/ties.yml")
    cases["example_gradient_slerp"] = ({
        "slices": [{"sources": [{"model": da, "layer_range": [0, 8]}, {"model": db, "layer_range": [0, 8]}]}],
        "merge_method": "slerp", "base_model": da,
        "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                             {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]},
        "dtype": "float16"}, "examples/gradient-slerp.yml")
    cases["example_linear"] = ({
        "models": [{"model": da, "parameters": {"weight": 1.0}}, {"model": db, "parameters": {"weight": 0.3}},
                   {"model": dc, "parameters": {"weight": 0.5}}],
        "merge_method": "linear", "dtype": "float16"}, "examples/linear.yml")
    cases["example_bio_merge"] = ({
        "models": [{"model": da, "parameters": {"density": 0.5, "weight": 0.5}},
                   {"model": db, "parameters": {"density": 0.5, "weight": 0.5}}],
        "merge_method": "ties", "base_model": dd, "parameters": {"normalize": False, "int8_mask": True},
        "dtype": "float16"}, "examples/bio-merge.yml")
    cases["example_layer_stack"] = ({
        "slices": [{"sources": [{"model": da, "layer_range": [0, 6]}]},
                   {"sources": [{"model": db, "layer_range": [2, 8]}]}],
        "merge_method": "passthrough", "dtype": "float16"}, "examples/orcamini-platy-44layer.yml")
    cases["example_arcee_fusion"] = ({"models": [{"model": da}, {"model": db}], "merge_method": "arcee_fusion",
                                      "base_model": da, "dtype": "bfloat16"}, "examples/arcee_fusion.yml")

    # mergekit's tests/test_tokenizer.py
    tb, tc, tp = m("tok_base"), m("tok_chatml"), m("tok_padded")
    tt = "tests/test_tokenizer.py::TestTokenizerMerges::test_"

    def tok_config(models, method="linear", source=None, tval=None, tokenizer=None):
        cfg = {"merge_method": method, "base_model": tb,
               "models": [{"model": x, "parameters": {"weight": 1.0}} for x in models], "dtype": "float32"}
        if tval is not None:
            cfg["parameters"] = {"t": tval}
        if source is not None:
            cfg["tokenizer_source"] = source
        if tokenizer is not None:
            cfg["tokenizer"] = tokenizer
        return cfg

    cases["tokenizer_legacy"] = (tok_config([tb, tp, tc]), tt + "legacy_mode")
    cases["tokenizer_source_base"] = (tok_config([tb, tp, tc], source="base"), tt + "source_base")
    cases["tokenizer_source_union"] = (tok_config([tb, tp, tc], source="union"), tt + "source_union")
    cases["tokenizer_source_model"] = (tok_config([tb, tp, tc], source=tc), tt + "source_model")
    cases["tokenizer_slerp_union"] = (tok_config([tb, tc], method="slerp", source="union", tval=0.5),
                                      tt + "slerp_union")
    cases["tokenizer_force_token"] = (tok_config([tb, tc], tokenizer={
        "source": "union", "tokens": {"_tok_10": {"source": tc, "force": True},
                                      "_tok_11": {"source": tb, "force": True}}}), tt + "force_token")
    cases["tokenizer_model_token_id"] = (tok_config([tb, tc], tokenizer={
        "source": "base", "tokens": {
            "_tok_20": {"source": {"kind": "model_token", "model": tc, "token_id": 64}, "force": True},
            "_tok_21": {"source": {"kind": "model_token", "model": tb, "token": "<s>"}, "force": True}}}),
        tt + "model_token_id")
    cfg = tok_config([tc], tokenizer={"source": "base", "pad_to_multiple_of": 16})
    cfg["base_model"] = tc
    cases["tokenizer_pad_to_multiple_of"] = (cfg, tt + "pad_to_multiple_of")
    return cases


# --------------------------------------------------------------------------
# Running mergekit
# --------------------------------------------------------------------------

def with_dtype(cfg, dtype):
    cfg = copy.deepcopy(cfg)
    cfg["dtype"] = dtype
    return cfg


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def read_safetensors(path):
    """(header, raw bytes per tensor) of one file, without torch."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    body = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


def output_tensors(out_dir):
    tensors = {}
    for f in sorted(os.listdir(out_dir)):
        if f.endswith(".safetensors"):
            tensors.update(read_safetensors(os.path.join(out_dir, f)))
    return tensors


def random_statistics(out_dir, cfg):
    """What a random method's output must share with mergekit's: how many
    entries keep the base value and how far the rest moved."""
    from safetensors.torch import load_file

    base = {}
    for f in sorted(os.listdir(cfg["base_model"])):
        if f.endswith(".safetensors"):
            base.update(load_file(os.path.join(cfg["base_model"], f)))
    out = {}
    for f in sorted(os.listdir(out_dir)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(out_dir, f)))
    unchanged = total = 0
    delta = reference = 0.0
    for name, x in out.items():
        # mergekit writes LLaVA's vision tower and projector as model.*
        b = (base[name] if name in base else base[name.removeprefix("model.")]).float()
        x = x.float()
        unchanged += int((x == b).sum())
        total += x.numel()
        delta += float(((x - b) ** 2).sum())
        reference += float((b ** 2).sum())
    return {"base": cfg["base_model"], "tensors": sorted(out), "elements": total, "unchanged_fraction": unchanged / total, "delta_norm": delta ** 0.5,
            "base_norm": reference ** 0.5}


def save_rounded(out_dir, path):
    from safetensors.torch import load_file, save_file

    tensors = {}
    for f in sorted(os.listdir(out_dir)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(out_dir, f)))
    save_file({k: v.to(torch.bfloat16) if v.dtype == torch.float32 else v for k, v in tensors.items()}, path)


def uses_tokenizers(cfg):
    paths = [cfg.get("base_model")] + [x["model"] for x in cfg.get("models", [])]
    paths += [src["model"] for sl in cfg.get("slices", []) for src in sl["sources"]]
    return any(p and os.path.exists(os.path.join(p, "tokenizer.json")) for p in paths)


def run_case(name, cfg, seed, compare):
    text = yaml.safe_dump(cfg, sort_keys=False)
    with open(os.path.join(ROOT, "recipes", name + ".yml"), "w") as f:
        f.write(text)
    out = os.path.join(ROOT, "expected", name)
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config = MergeConfiguration.model_validate(yaml.safe_load(text))
            run_merge(config, tmp, options=MergeOptions(random_seed=seed, quiet=True), config_source=text)
        except Exception as e:  # mergekit refuses this configuration: so must xmerge
            return {"compare": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        os.makedirs(out)
        for f in sorted(os.listdir(tmp)):
            # mergekit invents a tokenizer for models that have none (GPT-2's); keep only real ones.
            if f in KEEP_FILES and not f.endswith(".index.json") and (f == "config.json" or uses_tokenizers(cfg)):
                shutil.copy(os.path.join(tmp, f), os.path.join(out, f))
        result = {"compare": compare}
        if compare == "random":
            result["statistics"] = random_statistics(tmp, cfg)
        elif compare == "exact":
            # The bits through a digest per tensor, the values rounded to bfloat16
            # (half the size; enough to say how far off a differing result is).
            digests = {k: {"dtype": d, "shape": s, "fnv1a64": fnv1a64(b)} for k, (d, s, b) in output_tensors(tmp).items()}
            with open(os.path.join(out, "tensors.json"), "w") as f:
                json.dump(digests, f, indent=0, sort_keys=True)
                f.write("\n")
            if name.rsplit("-", 1)[0] not in COPIES:
                save_rounded(tmp, os.path.join(out, "model.safetensors"))
        else:
            save_rounded(tmp, os.path.join(out, "model.safetensors"))
    return result


def main():
    # The model card asks the Hugging Face Hub whether a relative path with one
    # slash names a repository; offline, every model here is a local path.
    mergekit.card.huggingface_hub.repo_exists = lambda *args, **kwargs: False
    os.makedirs(ROOT, exist_ok=True)
    os.chdir(ROOT)
    for d in ("models", "recipes", "expected"):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    make_models()
    out = {"generator": "tests/conformance/make_conformance.py", "seed": SEED, "mergekit": version("mergekit"),
           "torch": torch.__version__, "transformers": transformers.__version__, "cases": []}
    for name, (cfg, origin) in all_cases().items():
        method = cfg["merge_method"]
        variants = [("f32", "float32", "exact")]
        if method in RANDOM_METHODS:
            variants = [("f32", "float32", "random")]
        elif name in HALF_PRECISION:
            half = cfg.get("dtype") if name.startswith("example_") else "bfloat16"
            variants.append(("orig" if name.startswith("example_") else "bf16", half, "f16" if half == "float16" else "bf16"))
        for suffix, dtype, compare in variants:
            case = f"{name}-{suffix}"
            print("case", case, file=sys.stderr)
            entry = {"name": case, "method": method, "recipe": f"recipes/{case}.yml", "origin": origin}
            entry.update(run_case(case, with_dtype(cfg, dtype), SEED, compare))
            out["cases"].append(entry)
    with open("cases.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
