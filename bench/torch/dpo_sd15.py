#!/usr/bin/python3
"""PyTorch reference for bench/cases/dpo-sd15.ts: one Diffusion-DPO step on the tiny SD1.5
pipeline saved by real diffusers (../shared/data/reference-models/sd15-pipeline/pipeline: UNet on
4-channel 16x16 latents, CLIP text encoder width 24 with 77 positions, AutoencoderKL with scaling
0.18215, scaled_linear schedule, epsilon prediction), with the folder's own weights loaded into
the independent torch.nn transcriptions in scripts/golden/models/ (unet_reference.py,
clip_text.py, vae_autoencoder_kl.py; every state-dict name must match: strict loading).

work "latents" (as bench/torch/dpo.py, on latents): the pairs are VAE latents encoded once before
the loop (posterior mean x scaling factor, from random pixels in [-1, 1]); per step the prompt ids
go through the frozen text encoder, then the DPO step.

work "official": the official Diffusion-DPO train.py's per-step work for SD1.5:
  latents = vae.encode(pixels [2N, 3, 128, 128]).latent_dist.sample() * scaling_factor (no grad);
  noise = randn_like(latents).chunk(2)[0].repeat(2, ...); timesteps likewise (shared per pair);
  encoder_hidden_states = text_encoder(input_ids)[0].repeat(2, 1, 1) (no grad);
then the same DPO step.

The DPO step (both works): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, target eps; prompt
dropout 0.2 (the empty caption's ids); per-sample MSE over C, H, W for the policy (autograd) and
the frozen reference (no grad); inside = -beta/2 ((Lw - Ll) - (Rw - Rl)), loss =
mean(-logsigmoid(inside)); backward; clip 1.0; AdamW(0.9, 0.999, wd 1e-2); metrics read back.
mode "full": a deep-copied frozen reference; mode "lora": LoRA on to_q/to_k/to_v/to_out.0, the
reference is the network with adapters off (bench/torch/dpo.py's inject_lora).

Protocol as bench/torch/dpo.py (serve THREADS CONFIG_JSON). CONFIG_JSON: folder (the pipeline),
mode, work, pairs, beta, rank, alpha. "params" answers the parameter counts per component.
"""
import copy
import json
import os
import resource
import struct
import sys

from serve_loop import serve_forever  # noqa: E402 (bench/torch is the script directory)

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "golden", "models"))
import clip_text  # noqa: E402
import unet_reference  # noqa: E402
import vae_autoencoder_kl  # noqa: E402
from dpo import dpo_update, held_bytes, inject_lora, reference_forward_of  # noqa: E402


def read_safetensors(path):
    """The documented format: u64 LE header length, JSON header {name: {dtype, shape, data_offsets}}, raw bytes."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {e['dtype']}, this reader takes F32 only")
        a, b = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(e["shape"]) if b > a else torch.zeros(e["shape"])
    return out


def load_json(folder, *parts):
    with open(os.path.join(folder, *parts)) as f:
        return json.load(f)


def scaled_linear_alphas_cumprod(cfg):
    T = cfg["num_train_timesteps"]
    if cfg["beta_schedule"] == "scaled_linear":
        betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2
    elif cfg["beta_schedule"] == "linear":
        betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], T, dtype=torch.float64)
    else:
        raise ValueError(f"beta_schedule {cfg['beta_schedule']} is not handled here")
    return torch.cumprod(1 - betas, 0)


def setup(cfg):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    folder = cfg["folder"]
    ucfg = load_json(folder, "unet", "config.json")
    tcfg = load_json(folder, "text_encoder", "config.json")
    vcfg = load_json(folder, "vae", "config.json")
    scfg = load_json(folder, "scheduler", "scheduler_config.json")
    if scfg.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError("this twin trains epsilon prediction (the tiny SD1.5 pipeline's)")
    unet = unet_reference.UNet2DConditionModel(**{k: v for k, v in ucfg.items() if k in unet_reference.DEFAULTS})
    text = clip_text.CLIPTextModel(tcfg)
    vae = vae_autoencoder_kl.AutoencoderKL(vcfg)
    for module, path in ((unet, ("unet", "diffusion_pytorch_model.safetensors")), (text, ("text_encoder", "model.safetensors")),
                         (vae, ("vae", "diffusion_pytorch_model.safetensors"))):
        module.load_state_dict(read_safetensors(os.path.join(folder, *path)), strict=True)
    text.requires_grad_(False).eval()
    vae.requires_grad_(False).eval()
    unet.train()
    params = {"unet": sum(p.numel() for p in unet.parameters()), "text": sum(p.numel() for p in text.parameters()),
              "vae": sum(p.numel() for p in vae.parameters())}
    if cfg["mode"] == "full":
        reference = copy.deepcopy(unet).requires_grad_(False).eval()
        lora = []
    else:
        lora = inject_lora(unet, cfg["rank"], cfg["alpha"])
        reference = None
    trainable = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2)
    abar = scaled_linear_alphas_cumprod(scfg).float()
    T = scfg["num_train_timesteps"]
    N, beta, work = cfg["pairs"], cfg["beta"], cfg["work"]
    L, V = tcfg["max_position_embeddings"], tcfg["vocab_size"]
    C = vcfg["latent_channels"]
    px = ucfg["sample_size"] * 2 ** (len(vcfg["block_out_channels"]) - 1)
    scale = vcfg["scaling_factor"]
    pool = 4 * N
    chosen_px = torch.rand(pool, 3, px, px, generator=g) * 2 - 1
    rejected_px = torch.rand(pool, 3, px, px, generator=g) * 2 - 1
    if work == "latents":
        # encoded once, before the loop (the posterior mean, as a training cache holds)
        with torch.no_grad():
            chosen_all = vae.encode(chosen_px)[0] * scale
            rejected_all = vae.encode(rejected_px)[0] * scale
    elif work != "official":
        raise ValueError(f"work {work} is not latents or official")
    ids_all = torch.randint(0, V, (pool, L), generator=g)
    ids_empty = torch.randint(0, V, (1, L), generator=g)
    state = {"k": 0, "persistent": 0}

    reference_forward = reference_forward_of(unet, reference, lora)

    def step():
        k = state["k"] % 4
        state["k"] += 1
        rows = slice(k * N, (k + 1) * N)
        ids = ids_all[rows].clone()
        drop = torch.rand(N, generator=g) < 0.2
        ids[drop] = ids_empty
        if work == "official":
            pixels = torch.cat([chosen_px[rows], rejected_px[rows]], 0)
            with torch.no_grad():
                mean, logvar = vae.encode(pixels)
                std = torch.exp(0.5 * logvar)
                x0 = (mean + std * torch.randn(mean.shape, generator=g)) * scale
            noise2 = torch.randn(x0.shape, generator=g).chunk(2)[0].repeat(2, 1, 1, 1)
            t2 = torch.randint(0, T, (2 * N,), generator=g).chunk(2)[0].repeat(2)
            with torch.no_grad():
                ctx = text(ids)[0].repeat(2, 1, 1)
        else:
            x0 = torch.cat([chosen_all[rows], rejected_all[rows]], 0)
            noise = torch.randn(N, C, x0.shape[2], x0.shape[3], generator=g)
            t = torch.randint(0, T, (N,), generator=g)
            with torch.no_grad():
                cond = text(ids)[0]
            ctx = torch.cat([cond, cond], 0)
            noise2 = torch.cat([noise, noise], 0)
            t2 = torch.cat([t, t], 0)
        a = abar[t2].sqrt().view(-1, 1, 1, 1)
        s = (1 - abar[t2]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise2
        target = noise2
        pred = unet(xt, t2, ctx)
        ref = reference_forward(xt, t2, ctx)
        metrics = dpo_update(pred, ref, target, beta, trainable, opt)
        weights = [*unet.parameters(), *text.parameters(), *vae.parameters()]
        state["persistent"] = max(state["persistent"], held_bytes(weights, reference, opt))
        return metrics

    def memory():
        return {"persistentBytes": state["persistent"], "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "trainable": sum(p.numel() for p in trainable)}

    return {"step": step, "memory": memory, "params": params}


def serve(threads, cfg):
    torch.set_num_threads(threads)
    ops = setup(cfg)
    serve_forever(ops, {"params": lambda: ops["params"], "memory": ops["memory"]})


if __name__ == "__main__":
    serve(int(sys.argv[2]), json.loads(sys.argv[3]))
