#!/usr/bin/env python3
"""A PyTorch implementation of lotus-deno's LOTUS model, for machines that have PyTorch.

It reads the project's own files: a checkpoint directory written by `deno task train`
(model.safetensors with Hugging Face GPT-2 names, config.json) and a dataset directory written
by `deno task build-dataset` (safetensors shards, docs/dataset-format.md). The model is plain
GPT-2 (pre-LayerNorm, tanh GELU, tied head), or a Llama (RMSNorm, rotary positions with Llama 3's
frequency scaling, grouped-query attention, SwiGLU, tied or untied head) when config.json's
model_type is "llama", run on the LOTUS schedule of train/step.ts and
docs/method.md: the question once, pass 0 and R loop passes over BOT and the K*c latents
(latent input e_LAT + h^(r-1), or h^(r-1) with "replace"), then the suffix attending to
the question's and pass R's keys and values; loss = answer CE + lambda * step CE. The
LOTUS-aux decoder is not implemented here.

Commands:

  compare CASE_DIR [--json FILE]
      The GPU check's comparison (check/gpu_check.ts writes CASE_DIR): this model's losses
      and logits against the engines' results stored with the batch, and a plain forward of
      transformers.GPT2LMHeadModel, loaded from the same checkpoint, against both. Exit status
      0 when everything is within tolerance, 1 otherwise, 3 when torch is missing.

  loss --checkpoint DIR --data DIR [--split train] [--batch 8] [--start 0]
       [--k K] [--c C] [--r R] [--lambda X] [--injection add|replace] [--step-loss after|in-loop]
      The loss of one batch of a dataset split (the examples start .. start+batch-1).

  bench (or --bench) [--checkpoint DIR | --preset tiny|small|gpt2 --vocab V] [--batch 64]
        [--question 60] [--answer 8] [--k 6] [--c 13] [--r R] [--dtype fp32|tf32|bf16]
        [--steps 20] [--no-compile] [--modes eager,compile-blocks,compile]
      Training throughput (forward, backward, clip, fused AdamW) in examples/s at one shape,
      on random tokens: eager; with torch.compile applied to each transformer block
      (compile-blocks: one compiled block serves every layer and chunk of a shape, so it
      compiles in a few graphs); and with torch.compile over the whole step's loss (compile:
      the 7-pass loop unrolled, which on an H200 did not finish compiling in 240 s).

Only numpy is needed to read the files; torch is imported when a command needs it.
"""

import argparse
import json
import math
import os
import sys
import time

# Never reach the network: models come from the checkpoint directory given.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

IGNORE = -100
DTYPES = {
    "F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
}
PRESETS = {  # model/config.ts
    "tiny": dict(n_positions=512, n_embd=64, n_head=4, n_layer=2),
    "small": dict(n_positions=1024, n_embd=256, n_head=4, n_layer=4),
    "gpt2": dict(n_positions=1024, n_embd=768, n_head=12, n_layer=12),
}


# ---- files ---------------------------------------------------------------------------------

def read_safetensors(path):
    """Tensors (numpy views) and metadata of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, e in header.items():
        dt = np.dtype(DTYPES[e["dtype"]])
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data, dt, (end - b) // dt.itemsize, 8 + n + b).reshape(e["shape"])
    return out, meta


def load_checkpoint(path):
    """(tensors, config) of a checkpoint directory or a run directory holding checkpoint/."""
    if not os.path.exists(os.path.join(path, "config.json")):
        path = os.path.join(path, "checkpoint")
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    sd, _ = read_safetensors(os.path.join(path, "model.safetensors"))
    if cfg.get("model_type") != "llama":
        sd = {k if k.startswith("transformer.") else "transformer." + k: v for k, v in sd.items()}
    return sd, cfg, path


def model_spec(cfg):
    """What the forward needs besides the tensors: GPT-2's head count, or a Llama config's
    fields (a dict)."""
    if cfg.get("model_type") != "llama":
        return cfg["n_head"]
    return dict(n_head=cfg["num_attention_heads"], n_kv=cfg["num_key_value_heads"],
                eps=cfg["rms_norm_eps"], theta=cfg["rope_theta"],
                scaling=cfg.get("rope_scaling"))


def load_split(data_dir, split):
    """Examples (q, steps, ans) of a dataset split, and its special ids."""
    with open(os.path.join(data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    exs = []
    for shard in manifest["splits"][split]["shards"]:
        t, _ = read_safetensors(os.path.join(data_dir, shard["file"]))
        qo, so, rso, ao = (t[k] for k in ("question_offsets", "step_offsets",
                                          "record_step_offsets", "answer_offsets"))
        for i in range(len(qo) - 1):
            steps = [t["step_ids"][so[s]:so[s + 1]] for s in range(rso[i], rso[i + 1])]
            exs.append((t["question_ids"][qo[i]:qo[i + 1]], steps,
                        t["answer_ids"][ao[i]:ao[i + 1]]))
    return exs, manifest["tokenizer"]["special"], manifest


def lotus_batch(exs, sp, K, R, c):
    """train/batch.ts lotusBatch: the prefix, loop and suffix regions of a batch (numpy)."""
    B, L = len(exs), 1 + K * c
    P = max(len(q) for q, _, _ in exs)
    sufs = [np.concatenate([[sp["eot"]], *steps[K:], ans]).astype(np.int32)
            for _, steps, ans in exs]
    S = max(len(s) for s in sufs)
    b = dict(
        prefix_ids=np.full((B, P), sp["pad"], np.int32), prefix_pos=np.zeros((B, P), np.int32),
        prefix_valid=np.zeros((B, P), np.uint8),
        loop_ids=np.full((B, L), sp["lat"], np.int32),
        loop_ids_replace=np.full((B, L), -1, np.int32),
        loop_pos=np.zeros((B, L), np.int32), loop_valid=np.zeros((B, P + L), np.uint8),
        suffix_ids=np.full((B, S), sp["pad"], np.int32), suffix_pos=np.zeros((B, S), np.int32),
        suffix_valid=np.zeros((B, P + L + S), np.uint8),
        suffix_targets=np.full((B, S), IGNORE, np.int32),
        step_targets=np.full((B, L), IGNORE, np.int32), step_block=np.full((B, L), -1, np.int32),
    )
    for i, (q, steps, _) in enumerate(exs):
        n = len(q)
        b["prefix_ids"][i, P - n:] = q
        b["prefix_pos"][i, P - n:] = np.arange(n)
        b["prefix_valid"][i, P - n:] = 1
        b["loop_ids"][i, 0] = b["loop_ids_replace"][i, 0] = sp["bot"]
        b["loop_pos"][i] = n + np.arange(L)
        b["loop_valid"][i, :P] = b["prefix_valid"][i]
        b["loop_valid"][i, P:] = 1
        s = sufs[i]
        b["suffix_ids"][i, :len(s)] = s
        b["suffix_pos"][i] = n + L + np.arange(S)
        b["suffix_targets"][i, :len(s) - 1] = s[1:]
        b["suffix_valid"][i, :P] = b["prefix_valid"][i]
        b["suffix_valid"][i, P:P + L + len(s)] = 1
        for k in range(min(len(steps), K)):
            m = min(len(steps[k]), c)
            b["step_targets"][i, k * c:k * c + m] = steps[k][:m]
            b["step_block"][i, k * c:k * c + m] = k
    return b


# ---- the model (torch) -----------------------------------------------------------------------

def import_torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"torch_reference: PyTorch is not installed ({e})", file=sys.stderr)
        sys.exit(3)
    import torch
    return torch


def to_torch(torch, sd, device, dtype=None):
    dtype = dtype or torch.float32
    return {k: torch.tensor(np.array(v), device=device, dtype=dtype) for k, v in sd.items()}


def n_layers(P):
    return sum(1 for k in P if k.endswith(".ln_1.weight"))


def is_llama(P):
    return "model.embed_tokens.weight" in P


def head_weight(P):
    """The LM head [V, C]: the token embedding (tied) or Llama's lm_head.weight."""
    if is_llama(P):
        return P.get("lm_head.weight", P["model.embed_tokens.weight"])
    return P["transformer.wte.weight"]


def embed(torch, P, ids, pos):
    """wte[ids] (zero rows where ids < 0: "replace" injection) + wpe[pos] (pos may be None;
    a Llama model has no position table: its positions rotate queries and keys)."""
    wte = P["model.embed_tokens.weight"] if is_llama(P) else P["transformer.wte.weight"]
    x = wte[ids.long().clamp(min=0)] * (ids >= 0).unsqueeze(-1).to(wte.dtype)
    return x if pos is None or is_llama(P) else x + P["transformer.wpe.weight"][pos.long()]


def llama_inv_freq(torch, hs, theta, scaling):
    """Rotary frequencies theta^(-2i/hs), with Llama 3's scaling when given (the published
    rule: wavelengths longer than L/low_freq_factor are divided by factor, those shorter than
    L/high_freq_factor kept, the band between interpolated in L/wavelength)."""
    f = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    if scaling:
        L = scaling["original_max_position_embeddings"]
        lo, hi, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
        wavelen = 2 * math.pi / f
        smooth = (L / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * f / factor + smooth * f
        f = torch.where(wavelen < L / hi, f, torch.where(wavelen > L / lo, f / factor, mid))
    return f.float()


def llama_blocks(torch, P, spec, x, pos, past=None, valid=None):
    """A Llama decoder (Llama 3's architecture) over x [B,T,C] at positions pos [B,T]: per
    layer, RMSNorm, grouped-query attention with rotary queries and keys (rotate-half form),
    RMSNorm, SwiGLU MLP, each added to the residual; a final RMSNorm. past and valid as in
    run_blocks; the (k, v) returned per layer are [B, n_kv, T, HS], keys rotated."""
    import torch.nn.functional as F
    B, T, C = x.shape
    NH, NKV, eps = spec["n_head"], spec["n_kv"], spec["eps"]
    HS, G = C // NH, NH // NKV
    Tp = past[0][0].shape[2] if past else 0
    inv = llama_inv_freq(torch, HS, spec["theta"], spec["scaling"]).to(x.device)
    ang = pos.float()[..., None] * inv  # [B, T, HS/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None]  # [B, 1, T, HS]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None]

    def rotate(z):
        half = torch.cat([-z[..., HS // 2:], z[..., :HS // 2]], -1)
        return z * cos + half * sin

    def rms(h, w):
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w

    i = torch.arange(T, device=x.device)[:, None]
    j = torch.arange(Tp + T, device=x.device)[None, :]
    mask = (j <= Tp + i)[None, None]
    if valid is not None:
        mask = mask & valid.bool()[:, None, None, :]
    visible = mask.any(-1, keepdim=True)
    kvs = []
    n = sum(1 for k in P if k.endswith(".input_layernorm.weight") and k.startswith("model."))
    for layer in range(n):
        p = f"model.layers.{layer}."
        h = rms(x, P[p + "input_layernorm.weight"])
        q = (h @ P[p + "self_attn.q_proj.weight"].T).view(B, T, NH, HS).transpose(1, 2)
        k = (h @ P[p + "self_attn.k_proj.weight"].T).view(B, T, NKV, HS).transpose(1, 2)
        v = (h @ P[p + "self_attn.v_proj.weight"].T).view(B, T, NKV, HS).transpose(1, 2)
        q, k = rotate(q), rotate(k)
        kvs.append((k, v))
        if past:
            k, v = torch.cat([past[layer][0], k], 2), torch.cat([past[layer][1], v], 2)
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
        att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(-1)
        att = torch.where(visible, att, torch.zeros((), dtype=att.dtype, device=att.device))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ P[p + "self_attn.o_proj.weight"].T
        h = rms(x, P[p + "post_attention_layernorm.weight"])
        gate = F.silu(h @ P[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ P[p + "mlp.up_proj.weight"].T)) @ P[p + "mlp.down_proj.weight"].T
    return rms(x, P["model.norm.weight"]), kvs


def run_blocks(torch, P, n_head, x, past=None, valid=None, pos=None):
    """The GPT-2 stack over x [B,T,C] attending to past (per layer (k, v) [B,NH,Tp,HS]) and to
    itself causally; valid [B, Tp+T] masks keys. A query that sees no valid key gets output 0,
    as in the engine. Returns the final-LayerNorm states and this chunk's (k, v) per layer.
    With a Llama spec (a dict from model_spec) it runs llama_blocks at positions pos."""
    import torch.nn.functional as F
    if isinstance(n_head, dict):
        return llama_blocks(torch, P, n_head, x, pos, past, valid)
    T, C = x.shape[1], x.shape[2]
    Tp = past[0][0].shape[2] if past else 0
    i = torch.arange(T, device=x.device)[:, None]
    j = torch.arange(Tp + T, device=x.device)[None, :]
    mask = (j <= Tp + i)[None, None]
    if valid is not None:
        mask = mask & valid.bool()[:, None, None, :]
    visible = mask.any(-1, keepdim=True)
    kvs = []
    for layer in range(n_layers(P)):
        p = f"transformer.h.{layer}."
        w = tuple(P[p + name] for name in GPT2_BLOCK_PARAMS)
        pk, pv = past[layer] if past else (None, None)
        x, kv = BLOCK[0](torch, x, w, pk, pv, mask, visible, n_head)
        kvs.append(kv)
    return F.layer_norm(x, (C,), P["transformer.ln_f.weight"], P["transformer.ln_f.bias"],
                        1e-5), kvs


# A GPT-2 block's tensors, in the order gpt2_block takes them.
GPT2_BLOCK_PARAMS = tuple(f"{m}.{t}" for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2",
                                               "mlp.c_fc", "mlp.c_proj")
                          for t in ("weight", "bias"))


def gpt2_block(torch, x, w, past_k, past_v, mask, visible, n_head):
    """One GPT-2 block over x [B,T,C] (w: GPT2_BLOCK_PARAMS' tensors), attending to the past
    (past_k, past_v [B,NH,Tp,HS], or None) and to itself under mask [.., T, Tp+T]; rows that see
    no key (visible false) get attention output 0. Returns x and this chunk's (k, v).
    Compiled whole by torch.compile in compile-blocks mode: no import statement inside."""
    F = torch.nn.functional
    ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fcpw, fcpb = w
    B, T, C = x.shape
    HS = C // n_head
    qkv = F.layer_norm(x, (C,), ln1w, ln1b, 1e-5) @ qkvw + qkvb
    q, k, v = (z.view(B, T, n_head, HS).transpose(1, 2) for z in qkv.split(C, dim=2))
    kv = (k, v)
    if past_k is not None:
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
    # A finite fill (not -inf) keeps fully masked rows free of NaN, also in backward.
    att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(-1)
    att = torch.where(visible, att, torch.zeros((), dtype=att.dtype, device=att.device))
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    x = x + y @ projw + projb
    h = F.gelu(F.layer_norm(x, (C,), ln2w, ln2b, 1e-5) @ fcw + fcb, approximate="tanh")
    return x + h @ fcpw + fcpb, kv


# The block run_blocks calls: gpt2_block, or bench's compiled version of it (compile-blocks).
BLOCK = [gpt2_block]


def ce_sum(torch, logits, targets):
    import torch.nn.functional as F
    t = torch.where(targets < 0, torch.full_like(targets, IGNORE), targets).long().reshape(-1)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), t,
                           ignore_index=IGNORE, reduction="sum")


def lotus_forward(torch, P, n_head, b, K, R, lam, injection="add", step_loss="after",
                  counts=None):
    """train/step.ts LotusRunner.step's forward: losses and the suffix logits. `counts`
    (answer and step targets) may be given to keep the function free of host syncs, which
    torch.compile would otherwise have to break the graph for."""
    wte = head_weight(P)
    h_pre, kv_pre = run_blocks(torch, P, n_head, embed(torch, P, b["prefix_ids"], b["prefix_pos"]),
                               None, b["prefix_valid"], b["prefix_pos"])
    step_sum = torch.zeros((), device=wte.device)
    h_prev = kv_r = None
    for r in range(R + 1):
        ids = b["loop_ids_replace"] if r > 0 and injection == "replace" else b["loop_ids"]
        x = embed(torch, P, ids, b["loop_pos"])
        if r > 0:  # latents get the previous pass's states at the same position; BOT does not
            x = torch.cat([x[:, :1], x[:, 1:] + h_prev[:, 1:]], 1)
        h_prev, kv_r = run_blocks(torch, P, n_head, x, kv_pre, b["loop_valid"], b["loop_pos"])
        if step_loss == "in-loop" and r > 0:
            t = torch.where(b["step_block"] == r - 1, b["step_targets"],
                            torch.full_like(b["step_targets"], IGNORE))
            step_sum = step_sum + ce_sum(torch, h_prev @ wte.T, t)
    if step_loss == "after" and K > 0:
        step_sum = step_sum + ce_sum(torch, h_prev @ wte.T, b["step_targets"])
    past = [(torch.cat([kp, kr], 2), torch.cat([vp, vr], 2))
            for (kp, vp), (kr, vr) in zip(kv_pre, kv_r)]
    h_suf, _ = run_blocks(torch, P, n_head, embed(torch, P, b["suffix_ids"], b["suffix_pos"]),
                          past, b["suffix_valid"], b["suffix_pos"])
    logits = h_suf @ wte.T
    n_ans, n_step = counts or target_counts(b)
    if step_loss == "in-loop" and counts is None:
        # Only the blocks some pass supervises count: block r-1 at pass r, blocks 0..R-1.
        n_step = int(((b["step_block"] >= 0) & (b["step_block"] < R)).sum())
    ans = ce_sum(torch, logits, b["suffix_targets"]) / max(n_ans, 1)
    step = step_sum / max(n_step, 1)
    return dict(loss=ans + lam * step, ans=ans, step=step, suffix_logits=logits)


def target_counts(b):
    """Valid answer and step targets of a batch (the loss denominators)."""
    return int((b["suffix_targets"] >= 0).sum()), int((b["step_targets"] >= 0).sum())


def plain_logits(torch, P, n_head, ids):
    """A plain causal forward over ids [B, T] from position 0, no padding."""
    T = ids.shape[1]
    pos = torch.arange(T, device=ids.device)[None].expand_as(ids)
    h, _ = run_blocks(torch, P, n_head, embed(torch, P, ids, pos), pos=pos)
    return h @ head_weight(P).T


# ---- commands ------------------------------------------------------------------------------

def rel_err(out, ref):
    out, ref = np.asarray(out, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    if out.shape != ref.shape or not (np.isfinite(out).all() and np.isfinite(ref).all()):
        return float("inf")
    den = float(np.sqrt((ref * ref).sum()))
    num = float(np.sqrt(((out - ref) ** 2).sum()))
    return num if den == 0 else num / den


def device_of(torch):
    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_compare(args):
    torch = import_torch()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = device_of(torch)
    sd, cfg, ckdir = load_checkpoint(os.path.join(args.case, "checkpoint"))
    t, meta = read_safetensors(os.path.join(args.case, "batch.safetensors"))
    P = to_torch(torch, sd, dev)
    nh = model_spec(cfg)
    b = {k: torch.tensor(np.array(v), device=dev) for k, v in t.items()
         if not k.startswith("deno.")}
    K, R = int(meta["K"]), int(meta["R"])
    rows = []

    def row(name, err, tol, note=""):
        ok = math.isfinite(err) and err <= tol  # NaN never passes
        rows.append({"name": name, "err": err if math.isfinite(err) else None, "tol": tol,
                     "pass": ok, "note": note})

    with torch.no_grad():
        res = lotus_forward(torch, P, nh, b, K, R, float(meta["lambda"]), meta["injection"],
                            meta["step_loss"])
        plain = plain_logits(torch, P, nh, b["plain_ids"].long()).cpu().numpy()
    ours = [float(res["loss"]), float(res["ans"]), float(res["step"])]
    logits = res["suffix_logits"].cpu().numpy()
    for eng in meta["engines"].split(","):
        d = t[f"deno.{eng}.losses"]
        for i, what in enumerate(["loss", "answer loss", "step loss"]):
            row(f"torch reference vs {eng}: {what}", rel_err([ours[i]], [d[i]]), 1e-5,
                f"torch {ours[i]:.6f}, deno {d[i]:.6f}")
        row(f"torch reference vs {eng}: suffix logits", rel_err(t[f"deno.{eng}.suffix_logits"],
                                                                logits), 1e-4)
        row(f"torch reference vs {eng}: plain logits", rel_err(t[f"deno.{eng}.plain_logits"],
                                                               plain), 1e-4)
    hf_name = "LlamaForCausalLM" if cfg.get("model_type") == "llama" else "GPT2LMHeadModel"
    try:
        import transformers
        HfModel = getattr(transformers, hf_name)
        try:
            hf = HfModel.from_pretrained(ckdir, dtype=torch.float32)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            hf = HfModel.from_pretrained(ckdir, torch_dtype=torch.float32)
        hf = hf.to(dev).eval()
        with torch.no_grad():
            hl = hf(input_ids=b["plain_ids"].long()).logits.float().cpu().numpy()
        row(f"{hf_name} vs torch reference: plain logits", rel_err(hl, plain), 1e-4)
        for eng in meta["engines"].split(","):
            row(f"{hf_name} vs {eng}: plain logits",
                rel_err(t[f"deno.{eng}.plain_logits"], hl), 1e-4)
    except ImportError as e:
        rows.append({"name": hf_name, "err": None, "tol": 0, "pass": False,
                     "skipped": True, "note": f"transformers is not installed ({e})"})
    except Exception as e:  # noqa: BLE001 - any other failure is this row's, not the run's
        rows.append({"name": "GPT2LMHeadModel", "err": None, "tol": 0, "pass": False,
                     "note": f"{type(e).__name__}: {e}"[:300]})
    for r in rows:
        err = "inf" if r["err"] is None else f"{r['err']:.1e}"
        state = "skip" if r.get("skipped") else "ok  " if r["pass"] else "FAIL"
        print(f"{state} {r['name']}: {err} (tol {r['tol']:.0e}) {r['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["pass"] or r.get("skipped") for r in rows) else 1


def batch_to_torch(torch, b, dev):
    return {k: torch.tensor(v, device=dev) for k, v in b.items()}


def cmd_loss(args):
    torch = import_torch()
    dev = device_of(torch)
    sd, cfg, _ = load_checkpoint(args.checkpoint)
    lot = cfg.get("lotus", {}).get("train", {})
    K = args.k if args.k is not None else lot.get("k", 6)
    c = args.c if args.c is not None else lot.get("c", 13)
    R = args.r if args.r is not None else (lot.get("r") if lot.get("r") is not None else K)
    lam = args.lam if args.lam is not None else lot.get("lambda", 0.05)
    exs, sp, _ = load_split(args.data, args.split)
    part = exs[args.start:args.start + args.batch]
    b = batch_to_torch(torch, lotus_batch(part, sp, K, R, c), dev)
    with torch.no_grad():
        res = lotus_forward(torch, to_torch(torch, sd, dev), model_spec(cfg), b, K, R, lam,
                            args.injection or lot.get("injection", "add"),
                            args.step_loss or lot.get("stepLoss", "after"))
    print(json.dumps(dict(loss=float(res["loss"]), ans=float(res["ans"]),
                          step=float(res["step"]), examples=len(part), K=K, R=R, c=c)))
    return 0


def cmd_bench(args):
    torch = import_torch()
    dev = device_of(torch)
    rng = np.random.default_rng(0)
    if args.checkpoint:
        sd, cfg, _ = load_checkpoint(args.checkpoint)
    else:
        cfg = dict(PRESETS[args.preset], vocab_size=args.vocab)
        C, V, Lr = cfg["n_embd"], args.vocab, cfg["n_layer"]
        sd = {"transformer.wte.weight": rng.normal(0, 0.02, (V, C)),
              "transformer.wpe.weight": rng.normal(0, 0.02, (cfg["n_positions"], C)),
              "transformer.ln_f.weight": np.ones(C), "transformer.ln_f.bias": np.zeros(C)}
        for i in range(Lr):
            p = f"transformer.h.{i}."
            for name, shape in [("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)),
                                ("mlp.c_fc", (C, 4 * C)), ("mlp.c_proj", (4 * C, C))]:
                sd[p + name + ".weight"] = rng.normal(0, 0.02, shape)
                sd[p + name + ".bias"] = np.zeros(shape[1])
            for ln in ("ln_1", "ln_2"):
                sd[p + ln + ".weight"], sd[p + ln + ".bias"] = np.ones(C), np.zeros(C)
    V = cfg["vocab_size"]
    K, c = args.k, args.c
    R = args.r if args.r is not None else K
    sp = dict(eos=V - 4, pad=V - 4, bot=V - 3, eot=V - 2, lat=V - 1)
    tok = lambda n: rng.integers(0, V - 4, n).astype(np.int32)  # noqa: E731
    exs = [(tok(args.question), [tok(c) for _ in range(K)],
            np.concatenate([tok(args.answer - 1), [sp["eos"]]]).astype(np.int32))
           for _ in range(args.batch)]
    b = batch_to_torch(torch, lotus_batch(exs, sp, K, R, c), dev)
    positions = args.question + (R + 1) * (1 + K * c) + b["suffix_ids"].shape[1]
    if args.dtype == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
    P = to_torch(torch, sd, dev)
    params = list(P.values())
    for p in params:
        p.requires_grad_(True)
    # fused AdamW exists on CUDA only (and PyTorch before 2.0 has no `fused` argument at all).
    fused = dict(fused=True) if dev == "cuda" else {}
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **fused)
    nh = model_spec(cfg)
    counts = target_counts(b)

    def loss_fn():
        if args.dtype == "bf16":
            with torch.autocast(dev, dtype=torch.bfloat16):
                return lotus_forward(torch, P, nh, b, K, R, 0.05, counts=counts)["loss"]
        return lotus_forward(torch, P, nh, b, K, R, 0.05, counts=counts)["loss"]

    results = {}
    compiled = ("compile", "compile-blocks")
    modes = [m for m in args.modes.split(",") if not (m in compiled and args.no_compile)]
    if not modes or any(m not in ("eager",) + compiled for m in modes):
        print(f"--modes {args.modes}: a comma-separated list of eager, compile-blocks and "
              "compile", file=sys.stderr)
        return 2
    if not hasattr(torch, "compile") and any(m in compiled for m in modes):
        print(f"torch {torch.__version__} has no torch.compile: eager only", file=sys.stderr)
        modes = [m for m in modes if m not in compiled]
    for mode in modes:
        # Each section stands alone: a failure in one (torch.compile's toolchain, memory)
        # is recorded and the next still runs.
        BLOCK[0] = gpt2_block
        try:
            fwd = torch.compile(loss_fn) if mode == "compile" else loss_fn
            if mode == "compile-blocks":
                # One compiled block for every layer and chunk: recompiled per chunk shape
                # (question, loop passes, answer), not per layer, as the weights are inputs.
                BLOCK[0] = torch.compile(gpt2_block, dynamic=False)

            def step():
                loss = fwd()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss

            tw = time.perf_counter()
            for _ in range(3):  # warm-up (and compilation)
                step()
            print(f"{mode}: warm-up (3 steps, compilation included) "
                  f"{time.perf_counter() - tw:.1f} s", file=sys.stderr)
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            sync()
            dt = (time.perf_counter() - t0) / args.steps
            results[mode] = dict(ms_per_step=1000 * dt, examples_per_s=args.batch / dt,
                                 positions_per_s=args.batch * positions / dt, loss=float(loss),
                                 peak_gib=(torch.cuda.max_memory_allocated() / 2**30
                                           if dev == "cuda" else None))
            print(f"{mode}: {1000 * dt:.1f} ms/step, {args.batch / dt:.1f} examples/s, "
                  f"{args.batch * positions / dt:.0f} positions/s", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - any failure of one section
            results[mode] = dict(error=f"{type(e).__name__}: {e}"[:300])
            print(f"{mode}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            BLOCK[0] = gpt2_block
    print(json.dumps(dict(device=dev, dtype=args.dtype, batch=args.batch, K=K, c=c, R=R,
                          question=args.question, answer=args.answer, positions=positions,
                          params=int(sum(p.numel() for p in params)), torch=torch.__version__,
                          results=results)))
    return 0


def main(argv):
    if argv[:1] == ["--bench"]:  # `--bench` is another name for the bench command
        argv = ["bench"] + argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("compare", help="the GPU check's comparison")
    p.add_argument("case")
    p.add_argument("--json")
    p = sub.add_parser("loss", help="the loss of one batch of a dataset")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--k", type=int)
    p.add_argument("--c", type=int)
    p.add_argument("--r", type=int)
    p.add_argument("--lambda", dest="lam", type=float)
    p.add_argument("--injection", choices=["add", "replace"])
    p.add_argument("--step-loss", dest="step_loss", choices=["after", "in-loop"])
    p = sub.add_parser("bench", help="training examples/s, eager and torch.compile")
    p.add_argument("--checkpoint")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    p.add_argument("--vocab", type=int, default=50260)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--question", type=int, default=60)
    p.add_argument("--answer", type=int, default=8)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--c", type=int, default=13)
    p.add_argument("--r", type=int)
    p.add_argument("--dtype", choices=["fp32", "tf32", "bf16"], default="bf16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--modes", default="eager,compile-blocks",
                   help="comma-separated: eager, compile-blocks, compile "
                        "(default eager,compile-blocks)")
    args = ap.parse_args(argv)
    return {"compare": cmd_compare, "loss": cmd_loss, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
