// The parameter count and the memory of a DPO training step's persistent tensors for the real
// SDXL base UNet, from its unet/config.json (stabilityai/stable-diffusion-xl-base-1.0) built on
// libtorch's meta device (describeParameters: no weights allocated). Prints JSON; the README's
// SDXL table comes from it.   npx tsx scripts/sdxl/sdxl-size.ts
import { describeParameters, parseUNetConfig } from "../../src/models/unet/index.js";
import { DEFAULT_LORA_TARGETS } from "../../src/nn/lora.js";
import { ClipTextModel, DEFAULT_CLIP_TEXT_CONFIG } from "../../src/models/clip/text-model.js";
import { AutoencoderKL, SD_AUTOENCODER_KL_CONFIG } from "../../src/models/vae/autoencoder-kl.js";
import { getDefaultDevice, setDefaultDevice } from "../../src/tensor/index.js";
import { getInitGenerator } from "../../src/nn/init.js";

/** SDXL base's text_encoder (CLIP ViT-L/14) and text_encoder_2 (OpenCLIP ViT-bigG/14 with projection) configs. */
const SDXL_TEXT_ENCODER = { ...DEFAULT_CLIP_TEXT_CONFIG, hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12, projectionDim: 768 };
const SDXL_TEXT_ENCODER_2 = { ...DEFAULT_CLIP_TEXT_CONFIG, hiddenSize: 1280, intermediateSize: 5120, numHiddenLayers: 32, numAttentionHeads: 20, hiddenAct: "gelu" as const, projectionDim: 1280 };

/** Parameter count of a module built on the meta device (no values allocated). */
function metaCount(build: () => { parameters(): { size: number }[]; dispose(): void }): number {
  const previous = getDefaultDevice();
  const rng = getInitGenerator().getState();
  setDefaultDevice("meta");
  try {
    const m = build();
    const n = m.parameters().reduce((a, p) => a + p.size, 0);
    m.dispose();
    return n;
  } finally {
    setDefaultDevice(previous);
    getInitGenerator().setState(rng);
  }
}

/** stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the fields that differ from diffusers' defaults). */
export const SDXL_BASE_UNET_JSON = {
  _class_name: "UNet2DConditionModel",
  addition_embed_type: "text_time",
  addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20],
  block_out_channels: [320, 640, 1280],
  cross_attention_dim: 2048,
  down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  projection_class_embeddings_input_dim: 2816,
  sample_size: 128,
  transformer_layers_per_block: [1, 2, 10],
  up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  use_linear_projection: true,
};

/** The figures (see the file comment). */
export function sdxlSize(): Record<string, unknown> {
const { config } = parseUNetConfig(SDXL_BASE_UNET_JSON, "SDXL base unet/config.json");
const params = describeParameters(config);
const count = (list: { shape: number[] }[]) => list.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
const total = count(params);

// LoRA rank r on diffusers' targets: A [r, in] + B [out, r] per adapted Linear
const targets = DEFAULT_LORA_TARGETS;
const adapted = params.filter((p) => p.shape.length === 2 && targets.some((t) => p.name.endsWith(`.${t}.weight`)));
const loraParams = (r: number) => adapted.reduce((n, p) => n + r * (p.shape[0]! + p.shape[1]!), 0);

// Adafactor (factored second moments, no first moment): a row and a column vector per matrix
const adafactorState = params.reduce((n, p) => n + (p.shape.length >= 2 ? p.shape.slice(0, -1).reduce((a, b) => a * b, 1) + p.shape.at(-1)! : p.shape.reduce((a, b) => a * b, 1)), 0);
const GiB = 2 ** 30;
const f32 = 4;
const bf16 = 2;
const textEncoder = metaCount(() => new ClipTextModel(SDXL_TEXT_ENCODER));
const textEncoder2 = metaCount(() => new ClipTextModel(SDXL_TEXT_ENCODER_2, { withProjection: true }));
const vae = metaCount(() => new AutoencoderKL(SD_AUTOENCODER_KL_CONFIG));
const out = {
  tensors: params.length,
  parameters: total,
  frozenEncoders: { textEncoder, textEncoder2, vae, gibF32: ((textEncoder + textEncoder2 + vae) * 4) / 2 ** 30 },
  loraAdaptedLinears: adapted.length,
  loraParameters: { r8: loraParams(8), r64: loraParams(64) },
  adafactorStateValues: adafactorState,
  // full fine-tuning: policy weights f32 + gradients f32 + Adafactor state + the frozen reference copy (f32 or bf16)
  fullFineTuneGiB: {
    policyWeights: (total * f32) / GiB,
    gradients: (total * f32) / GiB,
    adafactorState: (adafactorState * f32) / GiB,
    referenceCopyF32: (total * f32) / GiB,
    referenceCopyBf16: (total * bf16) / GiB,
    totalWithF32Reference: ((3 * total + adafactorState) * f32) / GiB,
    adamwInstead: (total * 2 * f32) / GiB,
  },
  // LoRA r=8: one base copy (the reference is the same network with adapters off), adapter weights, grads, AdamW moments
  lora8GiB: { baseWeightsF32: (total * f32) / GiB, baseWeightsBf16: (total * bf16) / GiB, adapterTrainingState: (loraParams(8) * 4 * f32) / GiB },
};
return out;
}

if (process.argv[1]?.endsWith("sdxl-size.ts")) process.stdout.write(`${JSON.stringify(sdxlSize(), null, 2)}\n`);
