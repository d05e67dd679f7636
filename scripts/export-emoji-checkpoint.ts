// Writes a pretraining checkpoint's EMA weights as a model folder, to evaluate or sample a run
// that is still going (scripts/eval-emoji-base.ts --model OUT).
//
//   node --import tsx scripts/export-emoji-checkpoint.ts --checkpoint runs/emoji-deep/checkpoints/step-001000 \
//        --layout deep --out runs/emoji-deep-1000 [--which ema|weights]
import { parseArgs } from "node:util";
import { loadEmojiDataset } from "../src/datasets/emoji.js";
import { EMOJI_UNET_LAYOUTS, createEmojiModel } from "../src/datasets/emojiModel.js";
import { saveModelFolder } from "../src/models/pipeline.js";
import { loadCheckpointWeights, pretrainModelFrom } from "../src/train/pretrain.js";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string" },
    layout: { type: "string", default: "tiny" },
    out: { type: "string" },
    which: { type: "string", default: "ema" },
  },
});
if (!values.checkpoint || !values.out) throw new Error("--checkpoint and --out are required");
const layout = values.layout as keyof typeof EMOJI_UNET_LAYOUTS;
if (!(layout in EMOJI_UNET_LAYOUTS)) throw new Error(`--layout must be one of ${Object.keys(EMOJI_UNET_LAYOUTS).join(", ")}, got "${layout}"`);
if (values.which !== "ema" && values.which !== "weights") throw new Error(`--which must be ema or weights, got "${values.which}"`);
// the tokenizer is pruned to the training captions, as pretrain-emoji.ts builds it
const t2i = createEmojiModel(await loadEmojiDataset({ split: "train", size: 32 }), 0, layout);
loadCheckpointWeights(pretrainModelFrom(t2i), values.checkpoint, values.which);
saveModelFolder(values.out, t2i);
process.stderr.write(`saved ${values.out}\n`);
