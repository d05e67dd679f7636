#!/usr/bin/python3
"""Golden names, shapes and outputs for src/models/vae/autoencoder-kl.ts.

Run with Debian's PyTorch:  /usr/bin/python3 scripts/golden/models/vae_autoencoder_kl.py
Writes test/golden/models/vae_autoencoder_kl.json.

diffusers is not installed here, so this is a compact torch.nn transcription of diffusers'
AutoencoderKL (autoencoders/vae.py Encoder/Decoder, unet_2d_blocks.py DownEncoderBlock2D,
UpDecoderBlock2D, UNetMidBlock2D, resnet.py ResnetBlock2D, downsampling.py Downsample2D,
upsampling.py Upsample2D, attention_processor.py Attention + AttnProcessor2_0,
autoencoder_kl.py, DiagonalGaussianDistribution), read from the source, not copied. Attribute
names and registration order follow diffusers so the state-dict names are the real ones.

Weights: the deterministic scheme of scripts/golden/models/clip_text.py (parameters sorted by
name; parameter i from torch.Generator().manual_seed(1000 + i); >=2-D: randn / sqrt(fan_in);
1-D norm weights: 1 + 0.1 randn; other 1-D: 0.1 randn).
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "golden", "models", "vae_autoencoder_kl.json")
EPS = 1e-6


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1, 1, 0) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / 1.0


class Attention(nn.Module):
    """diffusers Attention(query_dim=C, heads=1, dim_head=C, norm_num_groups, residual_connection)."""

    def __init__(self, c, groups):
        super().__init__()
        self.heads = 1
        self.group_norm = nn.GroupNorm(groups, c, eps=EPS, affine=True)
        self.to_q = nn.Linear(c, c, bias=True)
        self.to_k = nn.Linear(c, c, bias=True)
        self.to_v = nn.Linear(c, c, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(c, c, bias=True), nn.Dropout(0.0)])

    def forward(self, x):
        residual = x
        b, c, h, w = x.shape
        hs = x.view(b, c, h * w).transpose(1, 2)
        hs = self.group_norm(hs.transpose(1, 2)).transpose(1, 2)
        q, k, v = self.to_q(hs), self.to_k(hs), self.to_v(hs)
        head_dim = c // self.heads
        q = q.view(b, -1, self.heads, head_dim).transpose(1, 2)
        k = k.view(b, -1, self.heads, head_dim).transpose(1, 2)
        v = v.view(b, -1, self.heads, head_dim).transpose(1, 2)
        # torch 1.13 has no scaled_dot_product_attention: diffusers' classic AttnProcessor path
        probs = (q @ k.transpose(-1, -2) * head_dim ** -0.5).float().softmax(dim=-1)
        hs = probs @ v
        hs = hs.transpose(1, 2).reshape(b, -1, self.heads * head_dim)
        hs = self.to_out[1](self.to_out[0](hs))
        hs = hs.transpose(-1, -2).reshape(b, c, h, w)
        return (hs + residual) / 1.0


class Downsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    def __init__(self, cin, cout, layers, groups, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, groups) for j in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            for d in self.downsamplers:
                x = d(x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cin, cout, layers, groups, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, groups) for j in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.upsamplers is not None:
            for u in self.upsamplers:
                x = u(x)
        return x


class UNetMidBlock2D(nn.Module):
    def __init__(self, c, groups, add_attention=True):
        super().__init__()
        resnets = [ResnetBlock2D(c, c, groups)]
        attentions = []
        for _ in range(1):
            attentions.append(Attention(c, groups) if add_attention else None)
            resnets.append(ResnetBlock2D(c, c, groups))
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList(resnets)

    def forward(self, x):
        x = self.resnets[0](x)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            if attn is not None:
                x = attn(x)
            x = resnet(x)
        return x


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        boc, g = c["block_out_channels"], c["norm_num_groups"]
        self.conv_in = nn.Conv2d(c["in_channels"], boc[0], 3, 1, 1)
        self.down_blocks = nn.ModuleList([])
        out = boc[0]
        for i, _ in enumerate(c["down_block_types"]):
            inp, out = out, boc[i]
            self.down_blocks.append(DownEncoderBlock2D(inp, out, c["layers_per_block"], g, i != len(boc) - 1))
        self.mid_block = UNetMidBlock2D(boc[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, boc[-1], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[-1], 2 * c["latent_channels"], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        boc, g = c["block_out_channels"], c["norm_num_groups"]
        self.conv_in = nn.Conv2d(c["latent_channels"], boc[-1], 3, 1, 1)
        self.up_blocks = nn.ModuleList([])
        self.mid_block = UNetMidBlock2D(boc[-1], g)
        rev = list(reversed(boc))
        out = rev[0]
        for i, _ in enumerate(c["up_block_types"]):
            prev, out = out, rev[i]
            self.up_blocks.append(UpDecoderBlock2D(prev, out, c["layers_per_block"] + 1, g, i != len(boc) - 1))
        self.conv_norm_out = nn.GroupNorm(g, boc[0], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, c):
        super().__init__()
        l = c["latent_channels"]
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quant_conv = nn.Conv2d(2 * l, 2 * l, 1)
        self.post_quant_conv = nn.Conv2d(l, l, 1)

    def encode(self, x):
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        return mean, logvar

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def fill_weights(model):
    names = sorted(n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for i, name in enumerate(names):
            p = params[name]
            r = torch.randn(p.shape, generator=torch.Generator().manual_seed(1000 + i))
            if p.dim() >= 2:
                p.copy_(r / math.sqrt(math.prod(p.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r)


TINY = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
            block_out_channels=[32, 64], layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32,
            scaling_factor=0.18215)
THREE = dict(TINY, down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
             block_out_channels=[16, 16, 32], layers_per_block=2, latent_channels=3, norm_num_groups=4)


def flat(t):
    return [float(v) for v in t.detach().double().flatten().tolist()]


def stats(t):
    t = t.detach().double()
    return {"sum": float(t.sum()), "abs_sum": float(t.abs().sum()), "shape": list(t.shape)}


def run_case(config, size):
    model = AutoencoderKL(config)
    fill_weights(model)
    # input in [-1, 1] from seed 7; latent-noise eps from seed 11 (the TS side draws the same)
    x = torch.rand((2, config["in_channels"], size, size), generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        mean, logvar = model.encode(x)
        eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(11))
        sample = mean + torch.exp(0.5 * logvar) * eps
        dec = model.decode(mean)
    return {
        "config": config,
        "size": size,
        "names": [[n, list(p.shape)] for n, p in model.state_dict().items()],
        "mean_first_channel": flat(mean[:, 0]),
        "mean": stats(mean),
        "logvar": stats(logvar),
        "sample": stats(sample),
        "sample_corner": flat(sample[:, :, :3, :3]),
        "decoded_corner": flat(dec[:, :, :4, :4]),
        "decoded": stats(dec),
        "kl": flat(0.5 * torch.sum(mean.pow(2) + logvar.exp() - 1.0 - logvar, dim=[1, 2, 3])),
    }


def main():
    cases = {"tiny": run_case(TINY, 32), "three_levels": run_case(THREE, 16)}
    # Stable Diffusion 1.x/2.x's VAE: names and shapes only (its real checkpoint holds these 248 tensors)
    sd = dict(TINY, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32, sample_size=512)
    sd_model = AutoencoderKL(sd)
    sd_names = [[n, list(p.shape)] for n, p in sd_model.state_dict().items()]
    sd_count = sum(p.numel() for p in sd_model.parameters())
    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/golden/models/vae_autoencoder_kl.py", "torch": torch.__version__, "cases": cases,
                   "sd": {"config": sd, "names": sd_names, "num_parameters": sd_count}}, f)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
