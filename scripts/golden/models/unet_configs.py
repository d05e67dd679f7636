"""The configurations the UNet goldens use (snake_case, as in diffusers' config.json)."""

TINY = dict(  # mirrors TINY_UNET_CONFIG in src/models/unet/config.ts
    sample_size=32, in_channels=3, out_channels=3,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[32, 64, 64], layers_per_block=1, norm_num_groups=8,
    cross_attention_dim=64, attention_head_dim=4,
)

# Exercises the other branches: linear projections (SD2), per-block head counts, layer counts and
# transformer depths, only_cross_attention, sin-first embedding with freq_shift 1, centred input,
# a custom time embedding width, 5x5 in/out convs, a mid-block scale and attention-free middle.
VARIANT = dict(
    sample_size=16, in_channels=4, out_channels=2, center_input_sample=True,
    flip_sin_to_cos=False, freq_shift=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[16, 24, 32], layers_per_block=[1, 2, 1], norm_num_groups=8, norm_eps=1e-6,
    cross_attention_dim=48, attention_head_dim=[2, 4, 4], transformer_layers_per_block=[1, 1, 2],
    only_cross_attention=[False, False, True], use_linear_projection=True,
    time_embedding_dim=40, conv_in_kernel=5, conv_out_kernel=5, mid_block_scale_factor=2.0,
)

# SD1.5's layout (attention at the top resolution, none at the bottom) without a middle block.
NO_MID = dict(TINY, mid_block_type=None, block_out_channels=[16, 16, 32], attention_head_dim=2,
              down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
              up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])

SD15 = {  # runwayml/stable-diffusion-v1-5 unet/config.json
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


def model_kwargs(cfg):
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k != "sample_size"}
