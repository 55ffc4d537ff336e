"""Build tiny random Hugging Face VLMs of the four families and dump parity fixtures.

Each fixture is a folder shaped like an HF checkpoint, plus one file of inputs and outputs:
  NAME/config.json          HF config (save_pretrained)
  NAME/model.safetensors    weights under their HF names (save_pretrained)
  NAME/io.safetensors       inputs, reference positions, intermediates, logits, greedy tokens
Run where torch and transformers are installed:  python3 make_fixtures.py OUT_DIR [public|extra|all]

`public` rebuilds the four original fixtures (tests/data/parity/{llava,fuyu,qwen2vl,idefics}_tiny)
exactly as the original script made them (same seeds, same random draws, same tensor
set). `extra` builds the project's additional fixtures (see tests/parity/README.md), which also save
stage-by-stage intermediates (vision_hidden_states, inputs_embeds, ...).
"""
import inspect
import itertools
import json
import math
import os
import sys
import traceback

import torch
import transformers
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
WHICH = sys.argv[2] if len(sys.argv) > 2 else "all"
torch.set_default_dtype(torch.float32)


def randomize(model, seed):
    """HF init (std 0.02) makes near-uniform logits; parity needs weights that move things."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "alpha" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 0.5)
            elif p.ndim == 1 and ("norm" in name or name.endswith("ln_q.weight") or ".ln." in name or "layrnorm" in name):
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                fan_in = p.shape[-1] if p.ndim >= 2 else p.shape[0]
                if p.ndim > 2:
                    fan_in = int(math.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(fan_in, 1)))


def _first_tensor(x):
    if isinstance(x, (tuple, list)):
        x = x[0]
    if hasattr(x, "last_hidden_state"):
        x = x.last_hidden_state
    return x


class Capture:
    """Forward hooks that keep the output (or one input kwarg) of named modules."""

    def __init__(self, model):
        self.model, self.store, self.handles = model, {}, []
        self.calls = {}  # key -> list of every captured tensor (for modules called more than once)

    def output(self, module_name, key):
        mod = self.model.get_submodule(module_name)

        def hook(m, args, kwargs, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if hasattr(t, "last_hidden_state"):
                t = t.last_hidden_state
            if key not in self.store:
                self.store[key] = t.detach().clone()

        self.handles.append(mod.register_forward_hook(hook, with_kwargs=True))

    def position_ids(self, module_name, key):
        mod = self.model.get_submodule(module_name)

        def hook(m, args, kwargs):
            pos = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
            if pos is not None and key not in self.store:
                self.store[key] = pos.detach().clone().to(torch.int64)

        self.handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))

    def input(self, module_name, key, kwarg=None):
        """First call's input: kwargs[kwarg] if given and present, else the first positional argument."""
        mod = self.model.get_submodule(module_name)

        def hook(m, args, kwargs):
            t = kwargs.get(kwarg) if kwarg else None
            if t is None and args:
                t = args[0]
            if torch.is_tensor(t) and key not in self.store:
                self.store[key] = t.detach().clone()

        self.handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))

    def every_call(self, module_name, key):
        """Every call's (input, output) of a module, in call order, under self.calls[key]."""
        mod = self.model.get_submodule(module_name)
        self.calls[key] = []

        def hook(m, args, kwargs, out):
            x = args[0] if args else next((v for v in kwargs.values() if torch.is_tensor(v)), None)
            self.calls[key].append((None if x is None else x.detach().clone(), _first_tensor(out).detach().clone()))

        self.handles.append(mod.register_forward_hook(hook, with_kwargs=True))

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def accepts(fn, name):
    return name in inspect.signature(fn).parameters


def save(name, model, io, family, notes):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in io.items() if v is not None}
    meta = {
        "family": family,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "notes": notes,
        "keys": ",".join(sorted(tensors)),
    }
    save_file(tensors, os.path.join(d, "io.safetensors"), metadata=meta)
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    print(f"[ok] {name}: {json.dumps(shapes)}")


def run_and_generate(model, inputs, new_tokens=6, cap=None):
    """Forward once (hooks in `cap` see only this call; they are removed before generate), then greedy."""
    with torch.no_grad():
        out = model(**inputs)
    if cap is not None:
        cap.close()
    gen = None
    try:
        with torch.no_grad():
            g = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
        gen = g[:, inputs["input_ids"].shape[1]:] if g.shape[1] > new_tokens else g
    except Exception as e:  # noqa: BLE001
        print(f"  generate failed: {type(e).__name__}: {e}")
    return out.logits, gen


def rope(theta):
    return {"rope_theta": theta, "rope_parameters": {"rope_type": "default", "rope_theta": theta}}


def check_rotary(model, expected_half):
    """Assert every rotary module of the text model has inv_freq of the expected length (rot_dims/2)."""
    seen = []
    for n, m in model.named_modules():
        inv = getattr(m, "inv_freq", None)
        if torch.is_tensor(inv) and "rotary" in n and "visual" not in n and "vision" not in n:
            seen.append((n, inv.numel()))
    print(f"  rotary modules: {seen}")
    if not seen:
        print("  WARNING: no rotary module with inv_freq found; partial rotary factor not checked")
    assert all(k == expected_half for _, k in seen), f"expected inv_freq length {expected_half}, got {seen}"


# ---------------------------------------------------------------- LLaVA
def llava(name, seed, text, vision, feature_layer, strategy, layout, extras=False):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    image_id = 5
    cfg = LlavaConfig(
        text_config=dict(model_type="llama", vocab_size=99, max_position_embeddings=256, pad_token_id=1,
                         **rope(10000.0), **text),
        vision_config=dict(model_type="clip_vision_model", num_channels=3, projection_dim=32, **vision),
        image_token_index=image_id, image_token_id=image_id, projector_hidden_act="gelu",
        vision_feature_select_strategy=strategy, vision_feature_layer=feature_layer,
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    model.config._attn_implementation = "eager"
    randomize(model, seed)
    if extras:  # the knobs this fixture exists for must have reached the model
        assert model.config.text_config.hidden_act == text["hidden_act"], model.config.text_config.hidden_act
        assert list(model.config.vision_feature_layer) == list(feature_layer), model.config.vision_feature_layer
        assert model.config.vision_feature_select_strategy == strategy
    n_patch = (vision["image_size"] // vision["patch_size"]) ** 2
    per_image = n_patch + (1 if strategy == "full" else 0)
    g = torch.Generator().manual_seed(seed + 1)
    rows, n_images = [], 0
    for pre, imgs, post in layout:  # one row per sample; imgs images, each followed by 2 text tokens
        row = torch.randint(7, 99, (pre,), generator=g).tolist()
        for _ in range(imgs):
            row += [image_id] * per_image + torch.randint(7, 99, (2,), generator=g).tolist()
            n_images += 1
        row += torch.randint(7, 99, (post,), generator=g).tolist()
        rows.append(row)
    width = max(len(r) for r in rows)  # equal lengths without padding: extend the trailing text
    rows = [r + torch.randint(7, 99, (width - len(r),), generator=g).tolist() for r in rows]
    ids = torch.tensor(rows)
    pix = torch.rand((n_images, 3, vision["image_size"], vision["image_size"]), generator=g) * 2 - 1
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pix)
    cap = Capture(model)
    cap.output("model.multi_modal_projector", "image_features")
    if extras:
        cap.input("model.multi_modal_projector", "vision_hidden_states")
        cap.input("model.language_model", "inputs_embeds", kwarg="inputs_embeds")
    logits, gen = run_and_generate(model, inputs, cap=cap)
    io = dict(inputs, logits=logits, generated=gen, **cap.store)
    notes = f"strategy={strategy} feature_layer={feature_layer}"
    if extras:
        notes += f" text_act={text['hidden_act']} layout={layout} tokens_per_image={per_image}"
    save(name, model, io, "llava", notes)


# ---------------------------------------------------------------- Fuyu
def fuyu_preprocess(raw, patch):
    """Emulate FuyuImageProcessor for an image smaller than its target box: pad bottom/right with 1.0 in
    raw 0..255 units up to a multiple of the patch (the processor pads to the box, then crops to
    ceil(h/p)*p x ceil(w/p)*p, the same thing), rescale 1/255, normalize mean 0.5 std 0.5, then patchify
    in row-major grid order with each patch flattened (py, px, c)."""
    h, w, c = raw.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    padded = torch.full((gh * patch, gw * patch, c), 1.0, dtype=torch.float64)
    padded[:h, :w] = raw.to(torch.float64)
    norm = ((padded * (1.0 / 255.0)) - 0.5) / 0.5
    x = norm.reshape(gh, patch, gw, patch, c).permute(0, 2, 1, 3, 4).reshape(gh * gw, patch * patch * c)
    return x.to(torch.float32), (gh, gw)


def fuyu(name, seed, text, patch, grids, text_len, raw_sizes=None, theta=25000.0):
    """grids: [(nh, nw)] one image per sample with random patches (public); or raw_sizes: [(H, W)] raw
    uint8-valued images (not multiples of the patch) that go through fuyu_preprocess (extra)."""
    from transformers import FuyuConfig, FuyuForCausalLM

    torch.manual_seed(seed)
    image_id, newline_id, bos = 7, 8, 1
    rope_kw = rope(theta)
    if "partial_rotary_factor" in text:
        rope_kw["rope_parameters"]["partial_rotary_factor"] = text["partial_rotary_factor"]
    if raw_sizes is None:
        rope_kw = rope(theta)  # public: exactly what the original script passed
    cfg = FuyuConfig(vocab_size=99, max_position_embeddings=256, pad_token_id=0, bos_token_id=bos,
                     image_token_id=image_id, patch_size=patch, num_channels=3, image_size=patch * 8,
                     **rope_kw, **text)
    model = FuyuForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    randomize(model, seed)
    extras = raw_sizes is not None
    if extras:
        hd = text["hidden_size"] // text["num_attention_heads"]
        check_rotary(model, int(hd * text["partial_rotary_factor"]) // 2)
        tc = model.config.text_config
        assert tc.hidden_act == text["hidden_act"] and bool(tc.qk_layernorm) == bool(text["qk_layernorm"])
        assert not any("q_layernorm" in n for n, _ in model.named_parameters()) or text["qk_layernorm"]
    g = torch.Generator().manual_seed(seed + 1)
    rows, patches, raws = [], [], []
    if extras:
        grids = []
        for (h, w) in raw_sizes:
            raw = torch.randint(0, 256, (h, w, 3), generator=g).to(torch.float32)
            p, grid = fuyu_preprocess(raw, patch)
            raws.append(raw)
            patches.append(p)
            grids.append(grid)
    for i, (nh, nw) in enumerate(grids):  # one image per sample
        row = []
        for _ in range(nh):
            row += [image_id] * nw + [newline_id]
        row += [bos] + torch.randint(10, 99, (text_len,), generator=g).tolist()
        rows.append(row)
        if not extras:
            patches.append(torch.rand((nh * nw, patch * patch * 3), generator=g) * 2 - 1)
    width = max(len(r) for r in rows)  # equal lengths without padding: extend the trailing text
    rows = [r + torch.randint(10, 99, (width - len(r),), generator=g).tolist() for r in rows]
    assert len({p.shape[0] for p in patches}) == 1
    ids = torch.tensor(rows)
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), image_patches=torch.stack(patches))
    if accepts(model.forward, "image_patches_indices"):
        idx = torch.full_like(ids, -1)
        for b in range(ids.shape[0]):
            pos = (ids[b] == image_id).nonzero().flatten()
            idx[b, pos] = torch.arange(len(pos))
        inputs["image_patches_indices"] = idx
    cap = Capture(model)
    cap.output("model.vision_embed_tokens", "image_features")
    if extras:
        cap.input("model.language_model", "inputs_embeds", kwarg="inputs_embeds")
    logits, gen = run_and_generate(model, inputs, cap=cap)
    io = dict(inputs, logits=logits, generated=gen, **cap.store)
    for i, raw in enumerate(raws):
        io[f"image_raw_{i}"] = raw
    notes = f"patch={patch} grids={grids} act={text.get('hidden_act')}"
    if extras:
        notes += (f" raw_sizes={raw_sizes} qk_layernorm={text['qk_layernorm']}"
                  f" partial_rotary_factor={text['partial_rotary_factor']} theta={theta}")
    save(name, model, io, "fuyu", notes)


# ---------------------------------------------------------------- Qwen2-VL
def qwen2_patches(frames, patch, tp, merge, g):
    """frames [T, C, H, W] -> rows [gt*gh*gw, C*tp*p*p] in the Qwen2-VL processor's order."""
    T, C, H, W = frames.shape
    gt, gh, gw = T // tp, H // patch, W // patch
    x = frames.reshape(gt, tp, C, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, C * tp * patch * patch), [gt, gh, gw]


def mrope_expected(types, thw_img, thw_vid, merge, advance, global_counters):
    """Diagnostics only: M-RoPE positions [3, B, T] for unpadded rows under two semantics.
    advance="v4": text after a vision span starts at start + max(t, h', w') (v4 get_rope_index, max+1);
    advance="v5": start + max(h', w') (the v5 mixin's get_mrope_position_block).
    global_counters: the k-th image of the batch uses image_grid_thw[k] (else the count restarts per row)."""
    grids = {1: thw_img, 2: thw_vid}
    counter = {1: 0, 2: 0}
    out = []
    for row in types:
        if not global_counters:
            counter = {1: 0, 2: 0}
        cur, blocks = 0, []
        for kind, grp in itertools.groupby(row):
            n = len(list(grp))
            if kind == 0:
                blocks.append(torch.arange(n).view(1, -1).expand(3, -1) + cur)
                cur += n
                continue
            t, h, w = grids[kind][counter[kind]]
            counter[kind] += 1
            gh, gw = h // merge, w // merge
            if t * gh * gw != n:
                return None
            ti = torch.arange(t).repeat_interleave(gh * gw)
            hi = torch.arange(gh).repeat_interleave(gw).repeat(t)
            wi = torch.arange(gw).repeat(gh * t)
            blocks.append(torch.stack([ti, hi, wi]) + cur)
            cur += max(t, gh, gw) if advance == "v4" else max(gh, gw)
        out.append(torch.cat(blocks, dim=1))
    return torch.stack(out, dim=1)


def qwen2vl(name, seed, text, vision, items, mrope_section, theta, extras=False):
    """items: one sample as [("text", n, 0, 0) | ("image", h, w, 0) | ("video", frames, h, w)], or (extra
    fixtures) a list of such samples, whose trailing text is extended to equal lengths (no padding)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    vs, ve, img, vid = 3, 6, 4, 5
    text_cfg = dict(model_type="qwen2_vl_text", vocab_size=99, max_position_embeddings=512, tie_word_embeddings=False,
                    rope_scaling={"type": "mrope", "mrope_section": mrope_section},
                    rope_theta=theta,
                    rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": mrope_section},
                    **text)
    cfg = Qwen2VLConfig(text_config=text_cfg, vision_config=dict(temporal_patch_size=2, in_chans=3, **vision),
                        vision_start_token_id=vs, vision_end_token_id=ve, image_token_id=img, video_token_id=vid,
                        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
                        **{k: v for k, v in text_cfg.items() if k not in ("model_type", "tie_word_embeddings")})
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.config._attn_implementation = "eager"
    randomize(model, seed)
    if extras:
        tc = model.config.text_config
        assert tc.num_key_value_heads == text["num_key_value_heads"], tc.num_key_value_heads
        assert list(tc.rope_parameters["mrope_section"]) == list(mrope_section), tc.rope_parameters
        assert sum(mrope_section) * 2 == text["hidden_size"] // text["num_attention_heads"]
    g = torch.Generator().manual_seed(seed + 1)
    patch, merge = vision["patch_size"], vision["spatial_merge_size"]
    samples = items if isinstance(items[0], list) else [items]
    all_ids, all_types = [], []
    pix_img, thw_img, pix_vid, thw_vid = [], [], [], []
    for sample in samples:
        ids, types = [], []
        for kind, a, b, c in sample:  # ("text", n) | ("image", h, w) | ("video", t, h, w)
            if kind == "text":
                t = torch.randint(10, 99, (a,), generator=g).tolist()
                ids += t
                types += [0] * len(t)
                continue
            if kind == "image":
                frames = (torch.rand((1, 3, a, b), generator=g) * 2 - 1).repeat(2, 1, 1, 1)
            else:
                frames = torch.rand((a, 3, b, c), generator=g) * 2 - 1
            rows, thw = qwen2_patches(frames, patch, 2, merge, g)
            n = thw[0] * thw[1] * thw[2] // (merge * merge)
            tok = img if kind == "image" else vid
            ids += [vs] + [tok] * n + [ve]
            types += [0] + [1 if kind == "image" else 2] * n + [0]
            (pix_img if kind == "image" else pix_vid).append(rows)
            (thw_img if kind == "image" else thw_vid).append(thw)
        all_ids.append(ids)
        all_types.append(types)
    width = max(len(r) for r in all_ids)  # equal lengths without padding: extend the trailing text
    for r, ty in zip(all_ids, all_types):
        extra = torch.randint(10, 99, (width - len(r),), generator=g).tolist()
        r += extra
        ty += [0] * len(extra)
    input_ids = torch.tensor(all_ids)
    types_t = torch.tensor(all_types)
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    if pix_img:
        inputs["pixel_values"] = torch.cat(pix_img)
        inputs["image_grid_thw"] = torch.tensor(thw_img)
    if pix_vid:
        inputs["pixel_values_videos"] = torch.cat(pix_vid)
        inputs["video_grid_thw"] = torch.tensor(thw_vid)
    if accepts(model.forward, "mm_token_type_ids"):
        inputs["mm_token_type_ids"] = types_t.clone()
    cap = Capture(model)
    if not extras:
        cap.output("model.visual.merger", "image_features")
    else:
        cap.every_call("model.visual.merger", "merger")
        cap.input("model.language_model", "inputs_embeds", kwarg="inputs_embeds")
    cap.position_ids("model.language_model.rotary_emb", "position_ids")
    logits, gen = run_and_generate(model, inputs, cap=cap)
    io = dict(inputs, logits=logits, generated=gen, **cap.store)
    io.pop("mm_token_type_ids", None)
    io["mm_token_type_ids"] = types_t
    notes = f"items={items} mrope_section={mrope_section} theta={theta}"
    if extras:
        # The merger runs once for the images and once for the videos; tell the calls apart by row count.
        n_img = sum(t * h * w for t, h, w in thw_img) // (merge * merge)
        n_vid = sum(t * h * w for t, h, w in thw_vid) // (merge * merge)
        assert n_img != n_vid, "pick grids whose image and video token counts differ"
        calls = cap.calls["merger"]
        print(f"  merger calls (rows in -> rows out): {[(tuple(x.shape), tuple(y.shape)) for x, y in calls]}")
        for x, y in calls:
            if y.shape[0] == n_img and "image_features" not in io:
                io["image_features"], io["vision_hidden_states"] = y, x
            elif y.shape[0] == n_vid and "video_features" not in io:
                io["video_features"], io["video_vision_hidden_states"] = y, x
        assert "image_features" in io and (not thw_vid or "video_features" in io), "merger capture failed"
        # Diagnostics: which M-RoPE semantics did transformers use?
        pos = io.get("position_ids")
        print(f"  position_ids captured: {None if pos is None else tuple(pos.shape)}")
        if pos is not None:
            for adv in ("v4", "v5"):
                for glob in (True, False):
                    exp = mrope_expected(all_types, thw_img, thw_vid, merge, adv, glob)
                    same = exp is not None and exp.shape == pos.shape and torch.equal(exp, pos)
                    print(f"  M-RoPE check advance={adv} global_grid_counter={glob}: "
                          f"{'MATCH' if same else 'differs'}")
            for b in range(pos.shape[1]):
                print(f"  positions row {b} (t/h/w):")
                for a in range(3):
                    print("    " + " ".join(str(v) for v in pos[a, b].tolist()))
        notes += " video_tokens=" + str(n_vid) + " image_tokens=" + str(n_img)
    save(name, model, io, "qwen2_vl", notes)


# ---------------------------------------------------------------- IDEFICS (Flamingo)
def idefics(name, seed, text, vision, perceiver, layout, extra, extras=False):
    """layout: one sample as [("text", n) | ("image", 1)], or (extra fixtures) a list of such samples with
    equal token counts and equal image counts."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    torch.manual_seed(seed)
    image_id, fake_id = 9, 10
    cfg = IdeficsConfig(vocab_size=99, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        vision_config=dict(num_channels=3, **vision),
                        perceiver_config=perceiver or {}, use_resampler=perceiver is not None,
                        **rope(10000.0), **text, **extra)
    model = IdeficsForVisionText2Text(cfg).eval()
    model.config._attn_implementation = "eager"
    randomize(model, seed)
    if extras:
        c = model.config
        assert c.alpha_type == text["alpha_type"] and bool(c.qk_layer_norms) == bool(text["qk_layer_norms"])
        assert bool(c.use_resampler) == (perceiver is not None)
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if "alpha" in n}
        print(f"  alphas: {shapes}")
        assert all(len(s) == 3 for s in shapes.values()) if text["alpha_type"] == "vector" else True
        n_qk = sum(1 for n, _ in model.named_parameters() if "q_layer_norm" in n or "k_layer_norm" in n)
        assert (n_qk > 0) == bool(text["qk_layer_norms"]), n_qk
    g = torch.Generator().manual_seed(seed + 1)
    samples = layout if isinstance(layout[0], list) else [layout]
    all_ids, all_index = [], []
    for sample in samples:
        ids, img_index = [], []
        count = -1
        for kind, n in sample:  # ("text", n) | ("image", 1)
            if kind == "text":
                ids += torch.randint(11, 99, (n,), generator=g).tolist()
                img_index += [count] * n
            else:
                count += 1
                ids += [fake_id, image_id, fake_id]
                img_index += [count - 1 if count > 0 else -1, count, count]
        all_ids.append(ids)
        all_index.append(img_index)
    n_img = max(max(ix) for ix in all_index) + 1
    assert len({len(r) for r in all_ids}) == 1, "samples must have equal lengths"
    assert all(max(ix) + 1 == n_img for ix in all_index), "samples must have equal image counts"
    mask = torch.zeros((len(samples), len(all_ids[0]), n_img), dtype=torch.long)
    for b, img_index in enumerate(all_index):
        for t, k in enumerate(img_index):
            if k >= 0:
                mask[b, t, k] = 1
    input_ids = torch.tensor(all_ids)
    s = vision["image_size"]
    pix = torch.rand((len(samples), n_img, 3, s, s), generator=g) * 2 - 1
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pix,
                  image_attention_mask=mask)
    cap = Capture(model)
    cap.output("model.perceiver_resampler" if perceiver else "model.vision_model", "image_features")
    if extras:
        n_x = text["num_hidden_layers"] // text["cross_layer_interval"]
        for j in range(n_x):
            cap.output(f"model.gated_cross_attn_layers.{j}", f"gated_xattn_out_{j}")
    logits, gen = run_and_generate(model, inputs, cap=cap)
    io = dict(inputs, logits=logits, generated=gen, **cap.store)
    save(name, model, io, "idefics", f"layout={layout} perceiver={perceiver} extra={extra}"
         + (f" text={text}" if extras else ""))


PUBLIC = [
    lambda: llava("llava_tiny", 11,
                  dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6),
                  dict(image_size=12, patch_size=3, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                       num_attention_heads=4, hidden_act="quick_gelu"),
                  -2, "default", [(3, 1, 4), (3, 1, 4)]),
    lambda: fuyu("fuyu_tiny", 12,
                 dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      hidden_act="relu2", qk_layernorm=True, partial_rotary_factor=0.5, layer_norm_eps=1e-5),
                 4, [(2, 3), (3, 2)], 6),
    lambda: qwen2vl("qwen2vl_tiny", 13,
                    dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6),
                    dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=4,
                         spatial_merge_size=2, hidden_act="quick_gelu"),
                    [("text", 3, 0, 0), ("image", 16, 16, 0), ("text", 4, 0, 0), ("image", 8, 24, 0),
                     ("text", 5, 0, 0)],
                    [2, 1, 1], 10000.0),
    lambda: idefics("idefics_tiny", 14,
                    dict(hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                         hidden_act="silu", cross_layer_interval=2, alpha_initializer="ones"),
                    dict(embed_dim=32, patch_size=3, image_size=12, num_attention_heads=4, num_hidden_layers=2,
                         intermediate_size=48),
                    dict(resampler_depth=2, resampler_head_dim=8, resampler_n_heads=2, resampler_n_latents=4),
                    [("text", 2), ("image", 1), ("text", 4), ("image", 1), ("text", 3)], {}),
]

# Extra fixtures of this project (tests/parity/README.md says what each covers).
EXTRA = [
    # LLaVA: feature layers as a list (concatenated on the hidden dim), "full" keeps CLS, GQA with
    # head_dim 10, tanh-GELU text MLP, two images in sample 0 and one in sample 1.
    lambda: llava("llava_layers_full", 31,
                  dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-5),
                  dict(image_size=15, patch_size=5, hidden_size=24, intermediate_size=40, num_hidden_layers=3,
                       num_attention_heads=2, hidden_act="quick_gelu"),
                  [-3, -1], "full", [(2, 2, 3), (4, 1, 2)], extras=True),
    # Fuyu: exact-erf GELU, no qk-layernorm, partial rotary 0.25 (4 of 16 dims), patch 5, raw images whose
    # sides are not multiples of 5 (padded by the processor: 13x17 -> 15x20 = 3x4 grid, 17x12 -> 20x15 = 4x3).
    lambda: fuyu("fuyu_gelu_noqk", 32,
                 dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      hidden_act="gelu", qk_layernorm=False, partial_rotary_factor=0.25, layer_norm_eps=1e-6),
                 5, None, 5, raw_sizes=[(13, 17), (17, 12)], theta=10000.0),
    # Qwen2-VL: one sample with 3 images of different grids (two back to back) and a video of 4 frames
    # (t=2 after temporal patching), MQA (1 kv head), head_dim 16 with mrope_section [2,3,3], patch 3.
    lambda: qwen2vl("qwen2vl_video_3img", 33,
                    dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=1, hidden_act="silu", rms_norm_eps=1e-6),
                    dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=3,
                         spatial_merge_size=2, hidden_act="quick_gelu"),
                    [("text", 3, 0, 0), ("image", 12, 18, 0), ("text", 2, 0, 0), ("video", 4, 6, 12),
                     ("text", 2, 0, 0), ("image", 6, 6, 0), ("image", 18, 6, 0), ("text", 4, 0, 0)],
                    [2, 3, 3], 1000000.0, extras=True),
    # Qwen2-VL, batch of 2: a video whose temporal extent (t=3) exceeds its merged spatial extent (1x1), so
    # the text after it tells max(t,h,w) from max(h,w) advances; the second sample's images have grids that
    # differ from the first sample's, so a per-row grid counter cannot pass.
    lambda: qwen2vl("qwen2vl_video_batch2", 34,
                    dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6),
                    dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=3,
                         spatial_merge_size=2, hidden_act="quick_gelu"),
                    [[("text", 2, 0, 0), ("video", 6, 6, 6), ("text", 3, 0, 0), ("image", 12, 12, 0),
                      ("text", 2, 0, 0)],
                     [("text", 3, 0, 0), ("image", 6, 18, 0), ("text", 2, 0, 0), ("image", 12, 6, 0),
                      ("text", 2, 0, 0)]],
                    [4, 2, 2], 10000.0, extras=True),
    # IDEFICS: no resampler (cross-attention over all CLS+patch tokens), vector alphas, RMS qk-norms in the
    # cross-attention, interval 2; sample 0 has text before its first image, sample 1 starts with an image.
    lambda: idefics("idefics_noresampler_vec", 35,
                    dict(hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                         hidden_act="gelu", cross_layer_interval=2, alpha_initializer="normal",
                         alphas_initializer_range=0.5, alpha_type="vector", qk_layer_norms=True),
                    dict(embed_dim=24, patch_size=4, image_size=12, num_attention_heads=2, num_hidden_layers=2,
                         intermediate_size=40),
                    None,
                    [[("text", 3), ("image", 1), ("text", 2), ("image", 1), ("text", 3)],
                     [("image", 1), ("text", 4), ("image", 1), ("text", 4)]],
                    {}, extras=True),
]

if __name__ == "__main__":
    print("transformers", transformers.__version__, "torch", torch.__version__)
    if WHICH not in ("public", "extra", "all"):
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR [public|extra|all]")
    jobs = (PUBLIC if WHICH in ("public", "all") else []) + (EXTRA if WHICH in ("extra", "all") else [])
    failed = 0
    for job in jobs:
        try:
            job()
        except Exception:  # noqa: BLE001
            failed += 1
            traceback.print_exc()
    print(f"done, {failed} failed")
    sys.exit(1 if failed else 0)
