"""Open models that vlmlab trained and kept in Hugging Face transformers, and record transformers'
outputs beside vlmlab's: the fixtures of tests/data/trained.

Each input folder comes from `vlmlab eval MODEL_DIR --export DIR` (tests/parity/README.md, "Models
vlmlab trained"): config.json and model.safetensors as vlmlab keeps a trained model, vlmlab.json, and
io.safetensors with a batch of inputs, vlmlab's logits ("logits") and greedy tokens ("generated").
This script loads each folder with the family's transformers class (from_pretrained, fp32, eager
attention), runs the same inputs, and writes OUT_DIR/<name>/ with the same files, where
io.safetensors now holds transformers' logits and greedy tokens under "logits" and "generated" and
vlmlab's under "vlmlab_logits" and "vlmlab_generated". `vlmlab parity OUT_DIR/<name>` then compares
vlmlab with transformers on a model vlmlab trained.

Run where torch and transformers are installed:
    python3 tests/parity/make_trained_fixtures.py tests/data/trained OUT_DIR
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "idefics": "IdeficsForVisionText2Text",
    "fuyu": "FuyuForCausalLM",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}
OUTPUTS = {"logits", "generated", "vlmlab_logits", "vlmlab_generated", "position_ids", "labels", "loss"}


def main(src_root, out_root):
    torch.set_default_dtype(torch.float32)
    worst = 0.0
    report = {}
    for name in sorted(os.listdir(src_root)):
        src = os.path.join(src_root, name)
        if not os.path.isfile(os.path.join(src, "io.safetensors")):
            continue
        with open(os.path.join(src, "config.json")) as f:
            model_type = json.load(f)["model_type"]
        cls = getattr(transformers, CLASSES[model_type])
        model = cls.from_pretrained(src, torch_dtype=torch.float32, attn_implementation="eager").eval()
        io = load_file(os.path.join(src, "io.safetensors"))
        inputs = {k: v for k, v in io.items() if k not in OUTPUTS}
        with torch.no_grad():
            logits = model(**inputs).logits
        n = io["generated"].shape[1]
        with torch.no_grad():
            g = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        gen = g[:, inputs["input_ids"].shape[1]:] if g.shape[1] > n else g
        ours = io.get("vlmlab_logits", io["logits"])
        ours_gen = io.get("vlmlab_generated", io["generated"])
        diff = (logits - ours).abs().max().item()
        same_tokens = bool(torch.equal(gen.to(torch.int64), ours_gen))
        worst = max(worst, diff)
        report[name] = {"class": cls.__name__, "max_abs_diff_logits": diff, "generated_equal": same_tokens}
        print(f"{name}: {cls.__name__} max |transformers - vlmlab| on logits {diff:.3g}, greedy tokens equal: {same_tokens}")
        dst = os.path.join(out_root, name)
        os.makedirs(dst, exist_ok=True)
        for f in os.listdir(src):
            if f != "io.safetensors":
                shutil.copy(os.path.join(src, f), os.path.join(dst, f))
        tensors = dict(io)
        tensors["vlmlab_logits"] = ours.contiguous()
        tensors["vlmlab_generated"] = ours_gen.contiguous()
        tensors["logits"] = logits.detach().contiguous()
        tensors["generated"] = gen.to(torch.int64).contiguous()
        meta = {"family": model_type, "transformers_version": transformers.__version__,
                "torch_version": torch.__version__, "hf_class": cls.__name__,
                "notes": "logits/generated: transformers; vlmlab_logits/vlmlab_generated: vlmlab (vlmlab eval --export)"}
        save_file(tensors, os.path.join(dst, "io.safetensors"), metadata=meta)
    with open(os.path.join(out_root, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"worst max |diff| {worst:.3g}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
