// mergeLoraIntoFolder on the tiny SDXL reference pipeline, through our SDXL loader and
// saveModelFolder: a LoRA on the UNet and both text encoders (kohya file, original-SD names)
// merged into a full folder computes what the LoRA-enabled model computes, and the merged folder
// survives folder → single file → folder → single file bit for bit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { disposeTextToImageModel, loadModelFolder, type TextToImageModel } from "../../../src/models/pipeline.js";
import {
  applyLoraWeights, exportSingleFileCheckpoint, importSingleFileCheckpoint, loraWeightsOf, readLoraFile, unetLayoutFromConfig, writeLoraFile,
  type LoraWeights,
} from "../../../src/models/convert/index.js";
import { mergeLoraIntoFolder } from "../../../src/models/convert/merge.js";
import { injectLora, loraLayers } from "../../../src/nn/lora.js";
import { setInitSeed, type Module } from "../../../src/nn/index.js";
import { Generator, noGrad, randn, tidy, type Tensor } from "../../../src/tensor/index.js";
import { referenceCase, relativeError } from "../../_reference.js";

const tmp = mkdtempSync(join(tmpdir(), "merge-sdxl-"));
const ref = referenceCase("sdxl-pipeline");
const sdxlDir = ref.pipelineFolder();
process.on("exit", () => { rmSync(tmp, { recursive: true, force: true }); rmSync(sdxlDir, { recursive: true, force: true }); });

function randomB(m: Module, g: Generator): void {
  noGrad(() => { for (const [, l] of loraLayers(m)) tidy(() => l.lora_B.weight.copy_(randn(l.lora_B.weight.shape, g).mul(0.05))); });
}

function outputs(m: TextToImageModel): Tensor[] {
  return noGrad(() => [
    m.unet.forward(ref.tensor("unet_sample"), ref.tensor("unet_timestep"), ref.tensor("unet_encoder_hidden_states"),
      { textEmbeds: ref.tensor("unet_text_embeds"), timeIds: ref.tensor("unet_time_ids") }),
    m.textEncoder.forward(ref.tensor("input_ids")).lastHiddenState,
    m.textEncoder2!.forward(ref.tensor("input_ids_2")).lastHiddenState,
  ]);
}

test("sdxl merge: UNet + both text encoders from a kohya file; merged = LoRA-enabled; single-file round trip bit-identical", () => {
  const m = loadModelFolder(sdxlDir);
  const g = new Generator(11);
  setInitSeed(11);
  injectLora(m.unet, { rank: 2, alpha: 2 });
  injectLora(m.textEncoder, { rank: 2, alpha: 1, targets: ["q_proj", "v_proj", "fc1"] });
  injectLora(m.textEncoder2!, { rank: 2, alpha: 3, targets: ["k_proj", "out_proj"] });
  for (const x of [m.unet, m.textEncoder, m.textEncoder2!]) randomB(x, g);
  const weights: LoraWeights = new Map([["unet", loraWeightsOf(m.unet)], ["text_encoder", loraWeightsOf(m.textEncoder)], ["text_encoder_2", loraWeightsOf(m.textEncoder2!)]]);
  const withLora = outputs(m);
  disposeTextToImageModel(m);

  const layout = unetLayoutFromConfig(JSON.parse(readFileSync(join(sdxlDir, "unet", "config.json"), "utf8")));
  const kohya = join(tmp, "xl.safetensors");
  writeLoraFile(weights, "kohya", kohya, { unetLayout: layout });
  const out = join(tmp, "merged");
  const r = mergeLoraIntoFolder({ model: sdxlDir, lora: kohya, out, singleFile: join(tmp, "merged-1.safetensors") });
  assert.equal(r.format, "kohya");
  assert.deepEqual(r.merged, { unet: weights.get("unet")!.size, text_encoder: weights.get("text_encoder")!.size, text_encoder_2: weights.get("text_encoder_2")!.size });

  const merged = loadModelFolder(out);
  const base = loadModelFolder(sdxlDir);
  try {
    const got = outputs(merged);
    const before = outputs(base);
    ["unet", "text_encoder", "text_encoder_2"].forEach((what, i) => {
      assert.ok(relativeError(before[i]!.toArray(), withLora[i]!.toArray()) > 1e-3, `${what}: the adapters change the output`);
      const err = relativeError(got[i]!.toArray(), withLora[i]!.toArray());
      assert.ok(err < 1e-5, `${what}: merged vs LoRA ${err}`); // measured: unet 9.2e-7, text_encoder 5.6e-7, text_encoder_2 5.0e-7
    });
  } finally {
    disposeTextToImageModel(merged);
    disposeTextToImageModel(base);
  }
  // the merged folder as a single file, back to a folder (configs from the base), and out again
  const back = join(tmp, "back");
  importSingleFileCheckpoint(join(tmp, "merged-1.safetensors"), back, { configFrom: sdxlDir });
  exportSingleFileCheckpoint(back, join(tmp, "merged-2.safetensors"));
  assert.ok(readFileSync(join(tmp, "merged-1.safetensors")).equals(readFileSync(join(tmp, "merged-2.safetensors"))));
  // the LoRA read back through the SDXL UNet's own layout applies to a fresh model
  const fresh = loadModelFolder(sdxlDir);
  try {
    applyLoraWeights(fresh.unet, readLoraFile(kohya, { unetLayout: layout }).weights.get("unet")!, kohya);
    assert.equal(loraLayers(fresh.unet).length, weights.get("unet")!.size);
  } finally {
    disposeTextToImageModel(fresh);
  }
});
