"""A compact torch.nn transcription of diffusers' UNet2DConditionModel (SD1.x/SD2.x subset).

Written from diffusers' unet_2d_condition.py, unet_2d_blocks.py, resnet.py, transformer_2d.py,
attention.py, attention_processor.py (the classic AttnProcessor: baddbmm + softmax + bmm) and
embeddings.py (get_timestep_embedding). Module attribute names produce the parameter names, so
`named_parameters()` is the diffusers naming scheme. Independent of the TypeScript code.
Run with Debian's /usr/bin/python3 (torch 1.13).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEVICE = None  # "meta" to list names and shapes without allocating


def lin(i, o, bias=True):
    return nn.Linear(i, o, bias=bias, device=DEVICE)


def conv(i, o, k, stride=1, padding=0):
    return nn.Conv2d(i, o, k, stride=stride, padding=padding, device=DEVICE)


def group_norm(groups, channels, eps):
    return nn.GroupNorm(groups, channels, eps=eps, affine=True, device=DEVICE)


DEFAULTS = dict(
    sample_size=None, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    only_cross_attention=False, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
    downsample_padding=1, mid_block_scale_factor=1.0, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=1280, transformer_layers_per_block=1, attention_head_dim=8, num_attention_heads=None,
    use_linear_projection=False, upcast_attention=False, conv_in_kernel=3, conv_out_kernel=3,
    time_embedding_dim=None,
)


def get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift, max_period=10000):
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32)
    exponent = exponent / (half - downscale_freq_shift)
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = lin(cin, dim)
        self.linear_2 = lin(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, scale=1.0):
        super().__init__()
        self.norm1 = group_norm(groups, cin, eps)
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.time_emb_proj = lin(temb, cout)
        self.norm2 = group_norm(groups, cout, eps)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.conv_shortcut = conv(cin, cout, 1) if cin != cout else None
        self.scale = scale

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.scale


class Attention(nn.Module):
    def __init__(self, query_dim, cross_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = lin(query_dim, inner, bias=False)
        self.to_k = lin(cross_dim or query_dim, inner, bias=False)
        self.to_v = lin(cross_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([lin(inner, query_dim), nn.Dropout(0.0)])

    def head_to_batch(self, t):
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).permute(0, 2, 1, 3).reshape(b * self.heads, n, d // self.heads)

    def batch_to_head(self, t):
        bh, n, d = t.shape
        return t.reshape(bh // self.heads, self.heads, n, d).permute(0, 2, 1, 3).reshape(bh // self.heads, n, d * self.heads)

    def forward(self, x, context=None):
        context = x if context is None else context
        q = self.head_to_batch(self.to_q(x))
        k = self.head_to_batch(self.to_k(context))
        v = self.head_to_batch(self.to_v(context))
        scores = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype),
                               q, k.transpose(-1, -2), beta=0, alpha=self.scale)
        out = self.batch_to_head(torch.bmm(scores.softmax(dim=-1), v))
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = lin(dim_in, dim_out * 2)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), lin(dim * mult, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, cross_dim, only_cross):
        super().__init__()
        self.only_cross = only_cross
        self.norm1 = nn.LayerNorm(dim, eps=1e-5, device=DEVICE)
        self.attn1 = Attention(dim, cross_dim if only_cross else None, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5, device=DEVICE)
        self.attn2 = Attention(dim, cross_dim, heads, dim_head)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5, device=DEVICE)
        self.ff = FeedForward(dim)

    def forward(self, h, ctx):
        h = self.attn1(self.norm1(h), ctx if self.only_cross else None) + h
        h = self.attn2(self.norm2(h), ctx) + h
        return self.ff(self.norm3(h)) + h


class Transformer2DModel(nn.Module):
    def __init__(self, heads, dim_head, cin, layers, cross_dim, groups, linear, only_cross):
        super().__init__()
        inner = heads * dim_head
        self.linear = linear
        self.norm = group_norm(groups, cin, 1e-6)
        self.proj_in = lin(cin, inner) if linear else conv(cin, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, cross_dim, only_cross) for _ in range(layers)])
        self.proj_out = lin(inner, cin) if linear else conv(inner, cin, 1)

    def forward(self, x, ctx):
        b, _, hh, ww = x.shape
        residual = x
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
            inner = h.shape[1]
            h = h.permute(0, 2, 3, 1).reshape(b, hh * ww, inner)
        else:
            inner = h.shape[1]
            h = self.proj_in(h.permute(0, 2, 3, 1).reshape(b, hh * ww, inner))
        for blk in self.transformer_blocks:
            h = blk(h, ctx)
        if not self.linear:
            h = h.reshape(b, hh, ww, -1).permute(0, 3, 1, 2).contiguous()
            h = self.proj_out(h)
        else:
            h = self.proj_out(h)
            h = h.reshape(b, hh, ww, -1).permute(0, 3, 1, 2).contiguous()
        return h + residual


class Downsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = conv(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = conv(ch, ch, 3, padding=1)

    def forward(self, x, size=None):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest") if size is None else F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class DownBlock(nn.Module):
    """DownBlock2D, or CrossAttnDownBlock2D when attn is given."""

    def __init__(self, cin, cout, temb, layers, groups, eps, add_down, attn=None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups, eps) for i in range(layers)])
        if attn is not None:
            self.attentions = nn.ModuleList([Transformer2DModel(attn["heads"], cout // attn["heads"], cout, attn["layers"],
                                                                attn["cross"], groups, attn["linear"], attn["only_cross"])
                                             for _ in range(layers)])
        else:
            self.attentions = None
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_down else None

    def forward(self, h, temb, ctx):
        states = ()
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h, ctx)
            states += (h,)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            states += (h,)
        return h, states


class MidBlock(nn.Module):
    def __init__(self, ch, temb, groups, eps, scale, attn):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb, groups, eps, scale), ResnetBlock2D(ch, ch, temb, groups, eps, scale)])
        self.attentions = nn.ModuleList([Transformer2DModel(attn["heads"], ch // attn["heads"], ch, attn["layers"],
                                                            attn["cross"], groups, attn["linear"], False)])

    def forward(self, h, temb, ctx):
        h = self.resnets[0](h, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            h = resnet(attn(h, ctx), temb)
        return h


class UpBlock(nn.Module):
    def __init__(self, cin, prev, cout, temb, layers, groups, eps, add_up, attn=None):
        super().__init__()
        res = []
        for i in range(layers):
            skip = cin if i == layers - 1 else cout
            rin = prev if i == 0 else cout
            res.append(ResnetBlock2D(rin + skip, cout, temb, groups, eps))
        self.resnets = nn.ModuleList(res)
        if attn is not None:
            self.attentions = nn.ModuleList([Transformer2DModel(attn["heads"], cout // attn["heads"], cout, attn["layers"],
                                                                attn["cross"], groups, attn["linear"], attn["only_cross"])
                                             for _ in range(layers)])
        else:
            self.attentions = None
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_up else None

    def forward(self, h, skips, temb, ctx, size=None):
        for i, resnet in enumerate(self.resnets):
            skip = skips[-1]
            skips = skips[:-1]
            h = resnet(torch.cat([h, skip], dim=1), temb)
            if self.attentions is not None:
                h = self.attentions[i](h, ctx)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, size)
        return h


class UNet2DConditionModel(nn.Module):
    def __init__(self, **cfg):
        super().__init__()
        c = dict(DEFAULTS)
        c.update(cfg)
        self.c = c
        ch = c["block_out_channels"]
        n = len(ch)

        def per_block(v):
            return list(v) if isinstance(v, (list, tuple)) else [v] * n

        heads = per_block(c["num_attention_heads"] or c["attention_head_dim"])
        layers = per_block(c["layers_per_block"])
        cross = per_block(c["cross_attention_dim"])
        tlayers = per_block(c["transformer_layers_per_block"])
        only = per_block(c["only_cross_attention"])
        groups, eps = c["norm_num_groups"], c["norm_eps"]
        temb = c["time_embedding_dim"] or ch[0] * 4
        self.conv_in = conv(c["in_channels"], ch[0], c["conv_in_kernel"], padding=(c["conv_in_kernel"] - 1) // 2)
        self.time_embedding = TimestepEmbedding(ch[0], temb)

        def attn_cfg(h, x, tl, oc):
            return dict(heads=h, cross=x, layers=tl, linear=c["use_linear_projection"], only_cross=oc)

        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(c["down_block_types"]):
            cin, out = out, ch[i]
            a = attn_cfg(heads[i], cross[i], tlayers[i], only[i]) if kind == "CrossAttnDownBlock2D" else None
            self.down_blocks.append(DownBlock(cin, out, temb, layers[i], groups, eps, i < n - 1, a))
        self.mid_block = None
        if c["mid_block_type"] == "UNetMidBlock2DCrossAttn":
            self.mid_block = MidBlock(ch[-1], temb, groups, eps, c["mid_block_scale_factor"],
                                      attn_cfg(heads[-1], cross[-1], tlayers[-1], False))
        rch, rheads, rlayers = ch[::-1], heads[::-1], layers[::-1]
        rcross, rtl, ronly = cross[::-1], tlayers[::-1], only[::-1]
        self.up_blocks = nn.ModuleList()
        out = rch[0]
        for i, kind in enumerate(c["up_block_types"]):
            prev, out = out, rch[i]
            cin = rch[min(i + 1, n - 1)]
            a = attn_cfg(rheads[i], rcross[i], rtl[i], ronly[i]) if kind == "CrossAttnUpBlock2D" else None
            self.up_blocks.append(UpBlock(cin, prev, out, temb, rlayers[i] + 1, groups, eps, i < n - 1, a))
        self.conv_norm_out = group_norm(groups, ch[0], eps)
        self.conv_out = conv(ch[0], c["out_channels"], c["conv_out_kernel"], padding=(c["conv_out_kernel"] - 1) // 2)

    def forward(self, sample, timesteps, ctx):
        c = self.c
        timesteps = timesteps.expand(sample.shape[0])
        t_emb = get_timestep_embedding(timesteps, c["block_out_channels"][0], c["flip_sin_to_cos"], c["freq_shift"])
        emb = self.time_embedding(t_emb.to(sample.dtype))
        if c["center_input_sample"]:
            sample = 2 * sample - 1.0
        h = self.conv_in(sample)
        res = (h,)
        for blk in self.down_blocks:
            h, states = blk(h, emb, ctx)
            res += states
        if self.mid_block is not None:
            h = self.mid_block(h, emb, ctx)
        factor = 2 ** (len(self.up_blocks) - 1)
        forward_size = any(s % factor != 0 for s in sample.shape[-2:])
        for i, blk in enumerate(self.up_blocks):
            is_final = i == len(self.up_blocks) - 1
            mine = res[-len(blk.resnets):]
            res = res[:-len(blk.resnets)]
            size = res[-1].shape[2:] if (not is_final and forward_size) else None
            h = blk(h, mine, emb, ctx, size)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def fill_deterministic(model):
    """The weight rule the TS test repeats: sorted names, k-th gets randn from seed 1000 + k."""
    names = sorted(n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, name in enumerate(names):
            p = params[name]
            z = torch.randn(tuple(p.shape), generator=torch.Generator().manual_seed(1000 + k))
            if p.dim() >= 2:
                p.copy_(z * (1.0 / math.sqrt(math.prod(p.shape[1:]))))
            elif name.endswith(".weight"):
                p.copy_(z * 0.1 + 1.0)
            else:
                p.copy_(z * 0.1)
