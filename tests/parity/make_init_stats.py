#!/usr/bin/env python3
"""Records how transformers initialises each family from scratch, for test_init.cpp.

    python3 tests/parity/make_init_stats.py tests/data/init/configs tests/data/init/hf_init_stats.json

CONFIG_DIR holds <family>.json, the config.json vlmlab writes for the family (from_sizes). For each,
the HF model is built from that config with torch.manual_seed(0) and every parameter's element
count, mean and standard deviation are written, next to the config itself. The C++ test builds
the same config and compares its own initial weights with these statistics: the draws differ, the
distributions must not (architectures.md: each family is initialised as its reference does).
Made with transformers 5.17.0 and torch 2.11.0.
"""
import json
import sys

import torch
import transformers
from transformers import (FuyuConfig, FuyuForCausalLM, IdeficsConfig, IdeficsForVisionText2Text, LlavaConfig,
                          LlavaForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration)

FAMILIES = {
    "llava": (LlavaConfig, LlavaForConditionalGeneration),
    "flamingo": (IdeficsConfig, IdeficsForVisionText2Text),
    "fuyu": (FuyuConfig, FuyuForCausalLM),
    "qwen2vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
}


def main(config_dir, out_path):
    out = {"transformers_version": transformers.__version__, "torch_version": torch.__version__, "families": {}}
    for fam, (config_cls, model_cls) in FAMILIES.items():
        with open(f"{config_dir}/{fam}.json") as f:
            config = json.load(f)
        kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
        torch.manual_seed(0)
        model = model_cls(config_cls(**kwargs))
        params = {}
        for name, p in model.named_parameters():
            p = p.detach().double()
            params[name] = [p.numel(), p.mean().item(), p.std(unbiased=False).item()]
        out["families"][fam] = {"config": config, "params": params}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
