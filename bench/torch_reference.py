#!/usr/bin/python3
"""vlmlab against PyTorch on the same models, side by side in one run.

Run with Debian's python3 (torch 1.13):
    /usr/bin/python3 bench/torch_reference.py --vlmlab build/experiments/vlmlab

For each family (llava, qwen2vl) and size (small: experiments/quickstart.toml's sizes, text and
vision hidden 64, 2 layers, 4 heads, patch 15, 75x75 images, qwen2vl spatial_merge_size 1;
large: the same at hidden 256, 4x the width) it
  1. has `vlmlab bench-model --export` write the model (config.json, model.safetensors) and its
     inputs, builds the same model here in plain torch (no transformers), loads vlmlab's weights,
     and checks the logits agree (max |diff| <= 1e-4 over the non-padded positions of the training
     batch and over the batch-1 prompt), the loss, and the greedy tokens of the cached decode;
  2. times, alternating vlmlab (a subprocess, `vlmlab bench-model --time ...`) and torch (this
     process) for each thing and thread count, ROUNDS times: a training step (forward, loss,
     backward, AdamW) at batch 32, prefill at batch 1, greedy decode per token with a KV cache at
     batch 1, with 1 and 2 threads;
  3. prints a table: medians in ms, GFLOP/s (the FLOPs vlmlab's ops count: for a training step
     vlmlab's own, `flops`, and torch's with every position's logits, `flops_full`) and vlmlab/torch
     time ratios (below 1: vlmlab is faster); beside each training step, vlmlab's matrix products of
     that step replayed alone (`--time train_gemms`): the time the step cannot go below with these
     GEMMs, and its ratio to torch's step.

Threads. Debian's torch sends matmuls to OpenBLAS (pthreads build), whose pool is separate from
torch.set_num_threads; both at 2 oversubscribes 2 cores (docs/threads.md). With 1
thread torch gets torch.set_num_threads(1) + OpenBLAS 1. With 2 threads torch is timed in both fair
settings, A: set_num_threads(1) + OpenBLAS 2, and B: set_num_threads(2) + OpenBLAS 2 with
OMP_WAIT_POLICY=PASSIVE (set before torch is imported), and its faster one counts (the table says
which). vlmlab runs its own loops and its GEMMs on one pool of N threads with OpenBLAS pinned to 1
thread (lib/core/parallel.h), whatever the environment says; it is started with the caller's
OPENBLAS_NUM_THREADS/OMP_* settings removed all the same.

BLAS settings, the same for both sides. OpenBLAS reads OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE, ...)
once, when it loads, to pick its kernels: some machines set OPENBLAS_CORETYPE=Haswell (AVX2 kernels
on an AVX-512 CPU). `--blas-env machine` (the default) keeps the machine's OPENBLAS_* settings for
torch and for vlmlab; `--blas-env strip` removes them from both (OpenBLAS then picks from its own CPU
table). Where this process was started with other settings than the chosen ones, it starts itself
again with them before torch (and so its OpenBLAS) is loaded. The table's header names what each
side uses: torch's OpenBLAS core (openblas_get_corename) and vlmlab's float GEMM kernel
(lib/ops/gemm_kernels.h: its own packed kernels at the CPU's width, chosen from CPUID, unless
`--vlmlab-gemm openblas` asks for OpenBLAS's sgemm, i.e. the same kernels as torch).
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time



def _blas_env_choice(argv):
    for i, a in enumerate(argv):
        if a == "--blas-env" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--blas-env="):
            return a.split("=", 1)[1]
    return "machine"


def _restart_with_blas_env():
    """Give torch's OpenBLAS the chosen OPENBLAS_* settings: they are read at load, so restart."""
    choice = _blas_env_choice(sys.argv[1:])
    if choice not in ("machine", "strip"):
        sys.exit(f"--blas-env takes machine or strip, got {choice!r}")
    if choice == "strip" and any(k.startswith("OPENBLAS_") for k in os.environ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


_restart_with_blas_env()
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch (libgomp reads it once); see setting B
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:  # the library Debian's torch itself calls (one copy per process); absent beside a pip torch (MKL)
    _openblas = ctypes.CDLL("libopenblas.so.0")
    _openblas.openblas_get_corename.restype = ctypes.c_char_p
    _openblas.openblas_get_config.restype = ctypes.c_char_p
except OSError:
    _openblas = None


def torch_blas_name():
    """What torch's matmuls run on here: OpenBLAS's kernels as it picked them at load."""
    if _openblas is None:
        return "no libopenblas.so.0 loaded (torch's own BLAS, see torch.__config__.show())"
    core = _openblas.openblas_get_corename().decode()
    config = _openblas.openblas_get_config().decode()
    return f"OpenBLAS {config.split()[1] if len(config.split()) > 1 else ''} core {core}".replace("  ", " ")


def blas_settings():
    return " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")) or "none"


def set_threads(torch_threads, blas_threads):
    torch.set_num_threads(torch_threads)
    if _openblas is not None:
        _openblas.openblas_set_num_threads(blas_threads)


# ---- safetensors (no python3-safetensors on Debian 12) --------------------------------------

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
           "BOOL": np.bool_}


def read_safetensors(path):
    """{name: torch tensor}: 8-byte little-endian header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"),
                            count=(b - a) // np.dtype(_DTYPES[info["dtype"]]).itemsize, offset=8 + n + a)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


# ---- the models, in plain torch, under vlmlab's (= transformers') parameter names ------------

def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def causal_padding_mask(valid, T_q, T_k):
    """Additive [B, 1, Tq, Tk]: key j visible to query i iff j <= i + Tk - Tq and key j is real."""
    i = torch.arange(T_q, device=valid.device).unsqueeze(1)  # on valid's device (torch_gpu.py runs on CUDA)
    j = torch.arange(T_k, device=valid.device).unsqueeze(0)
    ok = (j <= i + (T_k - T_q)).unsqueeze(0) & valid[:, None, :].bool()
    return torch.zeros(ok.shape, device=valid.device).masked_fill(~ok, torch.finfo(torch.float32).min).unsqueeze(1)


class DecoderAttention(nn.Module):
    def __init__(self, c, qkv_bias):
        super().__init__()
        self.h, self.kvh = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
        self.d = c["hidden_size"] // self.h
        self.q_proj = nn.Linear(c["hidden_size"], self.h * self.d, bias=qkv_bias)
        self.k_proj = nn.Linear(c["hidden_size"], self.kvh * self.d, bias=qkv_bias)
        self.v_proj = nn.Linear(c["hidden_size"], self.kvh * self.d, bias=qkv_bias)
        self.o_proj = nn.Linear(self.h * self.d, c["hidden_size"], bias=False)

    def forward(self, x, cos, sin, mask, cache):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kvh, self.d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kvh, self.d).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:  # HF DynamicCache: concatenate along the sequence
            if cache:
                k = torch.cat((cache[0], k), dim=2)
                v = torch.cat((cache[1], v), dim=2)
            cache[:] = [k, v]
        if self.kvh != self.h:
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        s = q @ k.transpose(2, 3) * self.d ** -0.5
        if mask is not None:
            s = s + mask
        o = torch.softmax(s, dim=-1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.h * self.d))


class GatedMlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c, qkv_bias):
        super().__init__()
        self.self_attn = DecoderAttention(c, qkv_bias)
        self.mlp = GatedMlp(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, c, qkv_bias):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(c, qkv_bias) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, h, cos, sin, mask, caches=None):
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, None if caches is None else caches[i])
        return self.norm(h)


class CausalLm(nn.Module):
    def __init__(self, c, qkv_bias):
        super().__init__()
        self.model = DecoderModel(c, qkv_bias)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)


def inv_freq(dim, theta):
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


class VisionMlp(nn.Module):
    def __init__(self, e, inter):
        super().__init__()
        self.fc1 = nn.Linear(e, inter)
        self.fc2 = nn.Linear(inter, e)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


# ---- llava: CLIP tower, 2-layer GELU projector, Llama ----

class ClipAttention(nn.Module):
    def __init__(self, e, h):
        super().__init__()
        self.h, self.d = h, e // h
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(e, e) for _ in range(4))

    def forward(self, x):
        B, T, E = x.shape
        q, k, v = (p(x).view(B, T, self.h, self.d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        o = torch.softmax(q @ k.transpose(2, 3) * self.d ** -0.5, dim=-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(B, T, E))


class ClipLayer(nn.Module):
    def __init__(self, v):
        super().__init__()
        e = v["hidden_size"]
        self.layer_norm1 = nn.LayerNorm(e, eps=v["layer_norm_eps"])
        self.self_attn = ClipAttention(e, v["num_attention_heads"])
        self.layer_norm2 = nn.LayerNorm(e, eps=v["layer_norm_eps"])
        self.mlp = VisionMlp(e, v["intermediate_size"])

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, v):
        super().__init__()
        e, p = v["hidden_size"], v["patch_size"]
        self.class_embedding = nn.Parameter(torch.zeros(e))
        self.patch_embedding = nn.Conv2d(v["num_channels"], e, p, stride=p, bias=False)
        self.position_embedding = nn.Embedding((v["image_size"] // p) ** 2 + 1, e)

    def forward(self, pixels):
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat((cls, x), dim=1) + self.position_embedding.weight


class ClipEncoder(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(v) for _ in range(v["num_hidden_layers"]))


class ClipVision(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.embeddings = ClipEmbeddings(v)
        self.pre_layrnorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])
        self.encoder = ClipEncoder(v)
        self.post_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])  # pooled output only

    def forward(self, pixels):  # the last layer's hidden state (vision_feature_layer -1)
        x = self.pre_layrnorm(self.embeddings(pixels))
        for layer in self.encoder.layers:
            x = layer(x)
        return x


class Projector(nn.Module):
    def __init__(self, dv, dt):
        super().__init__()
        self.linear_1 = nn.Linear(dv, dt)
        self.linear_2 = nn.Linear(dt, dt)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class Llava(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg["vision_feature_layer"] == -1 and cfg["vision_feature_select_strategy"] == "default"
        assert cfg["projector_hidden_act"] == "gelu"
        self.cfg, t = cfg, cfg["text_config"]
        self.vision_tower = ClipVision(cfg["vision_config"])
        self.multi_modal_projector = Projector(cfg["vision_config"]["hidden_size"], t["hidden_size"])
        self.language_model = CausalLm(t, qkv_bias=False)
        self.inv = inv_freq(t["hidden_size"] // t["num_attention_heads"], t["rope_theta"])

    def embed(self, inp):
        ids = inp["input_ids"]
        h = self.language_model.model.embed_tokens(ids)
        if "pixel_values" in inp:
            feats = self.multi_modal_projector(self.vision_tower(inp["pixel_values"])[:, 1:])
            is_image = (ids == self.cfg["image_token_index"]).unsqueeze(-1).expand_as(h)
            h = h.masked_scatter(is_image, feats.reshape(-1, h.shape[-1]))
        return h

    def rope(self, pos):  # pos [B, T]
        f = pos[..., None].float() * self.inv
        emb = torch.cat((f, f), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, inp, caches=None):
        """Full forward (caches None) or prefill (caches: one empty list per layer)."""
        valid = inp["attention_mask"]
        pos = (valid.cumsum(-1) - 1).masked_fill(valid == 0, 1)
        cos, sin = self.rope(pos)
        T = valid.shape[1]
        h = self.language_model.model(self.embed(inp), cos, sin, causal_padding_mask(valid, T, T), caches)
        return self.language_model.lm_head(h), pos.max(dim=-1).values + 1

    def decode(self, token, next_pos, caches):  # batch 1: one query sees every cached key
        cos, sin = self.rope(next_pos.view(1, 1))
        h = self.language_model.model(self.language_model.model.embed_tokens(token.view(1, 1)), cos, sin, None, caches)
        return self.language_model.lm_head(h)


# ---- qwen2vl: native-resolution ViT with 2-D RoPE, patch merger, Qwen2 with M-RoPE ----

class QwenVisionAttention(nn.Module):
    def __init__(self, e, h):
        super().__init__()
        self.h, self.d = h, e // h
        self.qkv = nn.Linear(e, 3 * e)
        self.proj = nn.Linear(e, e)

    def forward(self, x, cos, sin):  # x [n_img, S, E]: attention within each image
        n, S, E = x.shape
        q, k, v = self.qkv(x).view(n, S, 3, self.h, self.d).permute(2, 0, 3, 1, 4)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        o = torch.softmax(q @ k.transpose(2, 3) * self.d ** -0.5, dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(n, S, E))


class QwenVisionBlock(nn.Module):
    def __init__(self, v):
        super().__init__()
        e = v["embed_dim"]
        self.norm1 = nn.LayerNorm(e, eps=1e-6)
        self.norm2 = nn.LayerNorm(e, eps=1e-6)
        self.attn = QwenVisionAttention(e, v["num_heads"])
        self.mlp = VisionMlp(e, e * v["mlp_ratio"])

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, v):
        super().__init__()
        p = v["patch_size"]
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.zeros(v["embed_dim"], v["in_channels"], v["temporal_patch_size"], p, p))


class Merger(nn.Module):
    def __init__(self, v):
        super().__init__()
        w = v["embed_dim"] * v["spatial_merge_size"] ** 2
        self.ln_q = nn.LayerNorm(v["embed_dim"], eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, v["hidden_size"]))


class QwenVision(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v
        self.patch_embed = PatchEmbed(v)
        self.blocks = nn.ModuleList(QwenVisionBlock(v) for _ in range(v["depth"]))
        self.merger = Merger(v)
        self.inv = inv_freq(v["embed_dim"] // v["num_heads"] // 2, 10000.0)

    def forward(self, pixels, grids):
        v, m = self.v, self.v["spatial_merge_size"]
        assert m == 1 and all(tuple(g) == tuple(grids[0]) for g in grids) and all(g[0] == 1 for g in grids), \
            "this reference covers merge size 1 and equal single-frame images"
        E = v["embed_dim"]
        x = pixels @ self.patch_embed.proj.weight.view(E, -1).t()
        gh, gw = int(grids[0][1]), int(grids[0][2])
        hpos = torch.arange(gh, device=x.device).repeat_interleave(gw)
        wpos = torch.arange(gw, device=x.device).repeat(gh)
        f = torch.cat((hpos[:, None].float() * self.inv, wpos[:, None].float() * self.inv), dim=-1)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = x.view(len(grids), gh * gw, E)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.merger.mlp(self.merger.ln_q(x).view(-1, E * m * m))


class Qwen2Vl(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg, t = cfg, cfg["text_config"]
        lm = CausalLm(t, qkv_bias=True)
        self.model, self.lm_head = lm.model, lm.lm_head
        self.visual = QwenVision(cfg["vision_config"])
        rp = t["rope_parameters"]
        self.section = rp["mrope_section"]
        self.inv = inv_freq(t["hidden_size"] // t["num_attention_heads"], rp["rope_theta"])

    def rope(self, pos):  # pos [3, B, T] -> cos, sin [B, T, D] with M-RoPE's sections
        f = pos[..., None].float() * self.inv
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        pick = lambda t: torch.cat([c[i % 3] for i, c in enumerate(t.split(self.section * 2, dim=-1))], dim=-1)
        return pick(cos), pick(sin)

    def forward(self, inp, caches=None):
        ids, valid = inp["input_ids"], inp["attention_mask"]
        h = self.model.embed_tokens(ids)
        if "pixel_values" in inp:
            feats = self.visual(inp["pixel_values"], inp["image_grid_thw"].tolist())
            is_image = (inp["mm_token_type_ids"] == 1).unsqueeze(-1).expand_as(h)
            h = h.masked_scatter(is_image, feats)
        pos = inp["position_ids"]
        cos, sin = self.rope(pos)
        T = ids.shape[1]
        h = self.model(h, cos, sin, causal_padding_mask(valid, T, T), caches)
        return self.lm_head(h), pos.amax(dim=(0, 2)) + 1

    def decode(self, token, next_pos, caches):
        cos, sin = self.rope(next_pos.view(1, 1, 1).expand(3, 1, 1))
        return self.lm_head(self.model(self.model.embed_tokens(token.view(1, 1)), cos, sin, None, caches))


MODELS = {"llava": Llava, "qwen2vl": Qwen2Vl}


def loss_of(logits, labels):
    """Vlm::loss: each row's mean cross-entropy over its answer tokens, then the mean over rows."""
    B, T, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * T, V), labels.reshape(B * T), reduction="none").view(B, T)
    return (ce.sum(1) / (labels != -100).sum(1)).mean()


def model_inputs(t):
    names = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids", "position_ids")
    return {k: t[k] for k in names if k in t}


# ---- timing -----------------------------------------------------------------------------------

class TorchBench:
    def __init__(self, family, folder):
        with open(os.path.join(folder, "config.json")) as f:
            self.cfg = json.load(f)
        self.model = MODELS[family](self.cfg)
        self.model.load_state_dict(read_safetensors(os.path.join(folder, "model.safetensors")), strict=True)
        self.io = read_safetensors(os.path.join(folder, "io.safetensors"))
        self.pf = read_safetensors(os.path.join(folder, "prefill.safetensors"))
        self.train_in, self.labels = model_inputs(self.io), self.io["labels"]
        self.prompt = model_inputs(self.pf)
        self.opt = None
        self.n_layers = self.cfg["text_config"]["num_hidden_layers"]

    def agreement(self, decode_tokens):
        with torch.no_grad():
            logits, _ = self.model(self.train_in)
            valid = self.train_in["attention_mask"].bool()
            d_train = (logits - self.io["logits"])[valid].abs().max().item()
            d_loss = abs(loss_of(logits, self.labels).item() - self.io["loss"].item())
            plogits, _ = self.model(self.prompt)
            d_prompt = (plogits - self.pf["logits"]).abs().max().item()
            tokens = self.generate(decode_tokens)
        same = tokens == self.pf["decoded"].view(-1).tolist()
        return {"train_logits": d_train, "prompt_logits": d_prompt, "loss": d_loss, "decode_tokens_equal": same}

    def generate(self, n):
        caches = [[] for _ in range(self.n_layers)]
        logits, next_pos = self.model(self.prompt, caches)
        tok = logits[0, -1].argmax()
        out = [tok.item()]
        for k in range(1, n):
            tok = self.model.decode(tok, next_pos + k - 1, caches)[0, -1].argmax()
            out.append(tok.item())
        return out

    def time(self, what, warmup, repeats, decode_tokens):
        ms = []
        for rep in range(-warmup, repeats):
            if what == "train":
                if self.opt is None:
                    decay = [p for p in self.model.parameters() if p.dim() >= 2]
                    rest = [p for p in self.model.parameters() if p.dim() < 2]
                    self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                                  {"params": rest, "weight_decay": 0.0}], lr=2e-3)
                t0 = time.perf_counter()
                logits, _ = self.model(self.train_in)
                loss_of(logits, self.labels).backward()
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                dt = time.perf_counter() - t0
            else:
                with torch.no_grad():
                    caches = [[] for _ in range(self.n_layers)]
                    t0 = time.perf_counter()
                    logits, next_pos = self.model(self.prompt, caches)
                    dt = time.perf_counter() - t0
                    if what == "decode":
                        tok = logits[0, -1].argmax()
                        t0 = time.perf_counter()
                        for k in range(decode_tokens):
                            tok = self.model.decode(tok, next_pos + k, caches)[0, -1].argmax()
                        dt = (time.perf_counter() - t0) / decode_tokens
            if rep >= 0:
                ms.append(dt * 1e3)
        return ms


_VLMLAB_GEMM = None  # --vlmlab-gemm: VLMLAB_GEMM for the subprocess (None: vlmlab's own choice)


def vlmlab_env():
    # Thread settings only: vlmlab has its own pool (lib/core/parallel.h). OPENBLAS_CORETYPE and the
    # other kernel settings stay what torch's OpenBLAS loaded with (--blas-env), so both sides have
    # the same BLAS settings.
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("OMP_") or k.startswith("GOMP_") or k == "OPENBLAS_NUM_THREADS" or k == "VLMLAB_GEMM":
            del env[k]
    if _VLMLAB_GEMM:
        env["VLMLAB_GEMM"] = _VLMLAB_GEMM
    return env


def run_vlmlab(exe, *args):
    # torch's OpenBLAS pool, started by its 2-thread timings, busy-waits (sched_yield) for a while
    # after each GEMM: left running it would take a core from vlmlab's threads in the subprocess
    # (large prefill: 2.7 ms in the run against 1.9 ms alone). Stop it; set_threads restarts it for
    # torch's next timing, whose warmup repeats absorb the restart.
    set_threads(1, 1)
    if _openblas is not None:
        _openblas.blas_thread_shutdown_()
    r = subprocess.run([exe, "bench-model", *args], capture_output=True, text=True, env=vlmlab_env())
    if r.returncode != 0:
        sys.exit(f"vlmlab bench-model {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vlmlab", default="build/experiments/vlmlab", help="the vlmlab binary")
    ap.add_argument("--families", default="llava,qwen2vl")
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--what", default="train,prefill,decode")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of vlmlab and torch per cell")
    ap.add_argument("--repeats", type=int, default=10, help="timed repeats per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--json", help="also write every sample here")
    ap.add_argument("--blas-env", choices=["machine", "strip"], default="machine",
                    help="OPENBLAS_* settings for both sides: the machine's as they are, or none (see above)")
    ap.add_argument("--vlmlab-gemm", choices=["openblas", "portable", "avx2", "avx512"],
                    help="vlmlab's float GEMM kernel (VLMLAB_GEMM; default: the widest this CPU has)")
    a = ap.parse_args()
    global _VLMLAB_GEMM
    _VLMLAB_GEMM = a.vlmlab_gemm
    exe = os.path.abspath(a.vlmlab)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"BLAS settings for both sides (--blas-env {a.blas_env}): {blas_settings()}")
    print(f"torch's matmuls: {torch_blas_name()}")
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="vlmlab_torchref_") as tmp:
        for family in a.families.split(","):
            for size in a.sizes.split(","):
                folder = os.path.join(tmp, f"{family}_{size}")
                info = run_vlmlab(exe, "--family", family, "--size", size, "--export", folder,
                                  "--decode-tokens", str(a.decode_tokens))
                print(f"vlmlab's matmuls ({family} {size}): its {info.get('gemm', '?')} GEMM kernel "
                      f"({info.get('cpu', '?')}); gemv and double products on OpenBLAS as loaded with the same settings")
                set_threads(1, 1)
                tb = TorchBench(family, folder)
                agree = tb.agreement(a.decode_tokens)
                good = max(agree["train_logits"], agree["prompt_logits"]) <= a.tolerance and agree["decode_tokens_equal"]
                ok &= good
                print(f"{family} {size}: {info['params']} params; agreement max |diff| logits: training batch "
                      f"{agree['train_logits']:.2e}, prompt {agree['prompt_logits']:.2e}; loss {agree['loss']:.2e}; "
                      f"decode tokens {'equal' if agree['decode_tokens_equal'] else 'DIFFER'} -> "
                      f"{'OK' if good else 'FAILED'}", flush=True)
                for threads in (int(t) for t in a.threads.split(",")):
                    settings = {"1": (1, 1)} if threads == 1 else {"A": (1, threads), "B": (threads, threads)}
                    for what in a.what.split(","):
                        v_ms, t_ms, flops, torch_flops = [], {s: [] for s in settings}, 0, 0
                        # beside a training step, its matrix products alone (their floor under its time)
                        g_ms = []
                        timed = what + (",train_gemms" if what == "train" else "")
                        for _ in range(a.rounds):
                            r = run_vlmlab(exe, "--family", family, "--size", size, "--threads", str(threads),
                                           "--time", timed, "--warmup", str(a.warmup), "--repeats", str(a.repeats),
                                           "--decode-tokens", str(a.decode_tokens))
                            v_ms += r[what]["ms"]
                            g_ms += r.get("train_gemms", {}).get("ms", [])
                            flops = r[what]["flops"]
                            # a training step: torch computes every position's logits, the step's full work
                            torch_flops = r[what].get("flops_full", flops)
                            for s, (tt, bt) in settings.items():
                                set_threads(tt, bt)
                                t_ms[s] += tb.time(what, a.warmup, a.repeats, a.decode_tokens)
                        best = min(t_ms, key=lambda s: statistics.median(t_ms[s]))
                        v, t = statistics.median(v_ms), statistics.median(t_ms[best])
                        g = statistics.median(g_ms) if g_ms else None
                        rows.append(dict(family=family, size=size, threads=threads, what=what, vlmlab_ms=v,
                                         gemms_ms=g, gemms_samples=g_ms,
                                         torch_ms=t, torch_setting=best, flops=flops, torch_flops=torch_flops,
                                         torch_ms_by_setting={s: statistics.median(x) for s, x in t_ms.items()},
                                         vlmlab_samples=v_ms, torch_samples=t_ms, agreement=agree))
                        print(f"  {threads}T {what:8s} vlmlab {v:9.3f} ms  torch {t:9.3f} ms ({best})  "
                              f"ratio {v / t:.3f}" + (f"  (its GEMMs alone {g:.3f} ms: {g / t:.3f})" if g else ""),
                              flush=True)
                set_threads(1, 1)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("torch 2-thread settings: A = set_num_threads(1) + OpenBLAS 2; "
          "B = set_num_threads(2) + OpenBLAS 2 + OMP_WAIT_POLICY=PASSIVE; the faster counts.")
    print("ratio = vlmlab time / torch time (< 1: vlmlab faster); GFLOP/s from the FLOPs vlmlab's ops count: for a\n"
          "training step vlmlab's own (it computes only the answer positions' logits and their rows of the LM's last\n"
          "layer) and, for torch, those of the same step with every position's logits, as torch computes them.\n"
          "GEMMs alone: for a training step, vlmlab's matrix products of the step replayed by themselves\n"
          "(`bench-model --time train_gemms`), and over torch's time the ratio the step would have if all else were free.\n")
    print("| family | size | threads | what | vlmlab ms | torch ms (setting) | vlmlab GFLOP/s | torch GFLOP/s "
          "| vlmlab/torch | GEMMs alone ms (/torch) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gf, tgf = r["flops"] / 1e6, r["torch_flops"] / 1e6  # FLOP per ms -> GFLOP/s
        gm = f"{r['gemms_ms']:.3f} ({r['gemms_ms'] / r['torch_ms']:.3f})" if r["gemms_ms"] else ""
        print(f"| {r['family']} | {r['size']} | {r['threads']} | {r['what']} | {r['vlmlab_ms']:.3f} | "
              f"{r['torch_ms']:.3f} ({r['torch_setting']}) | {gf / r['vlmlab_ms']:.1f} | {tgf / r['torch_ms']:.1f} | "
              f"{r['vlmlab_ms'] / r['torch_ms']:.3f} | {gm} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if not ok:
        print("\nAGREEMENT FAILED: see the lines above", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
