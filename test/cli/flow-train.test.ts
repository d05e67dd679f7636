// `diffusion-dpo train` on the SD3 and Flux reference folders (Flow-DPO with LoRA on the
// transformer): a few steps from 64×64 JSONL pairs, the loss starting at ln 2, the LoRA file
// keyed transformer.* with the attention and feed-forward targets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { cliRunner } from "./_capture.js";
import trainCommand from "../../src/cli/commands/train.js";
import { brightJsonl } from "./train-fixture.js";
import { readSafetensorsSync } from "../../src/io/safetensors.js";
import { referenceCase } from "../_reference.js";

const cli = cliRunner({ train: trainCommand });

for (const [caseName, extra] of [["sd3-pipeline", []], ["flux-pipeline", ["--gradient-checkpointing"]]] as const) {
  test(`train --model <${caseName} folder> --lora ${extra.join(" ")}: Flow-DPO steps, ln 2 at the start, a transformer.* LoRA file`, async () => {
    const folder = referenceCase(caseName).pipelineFolder();
    const dir = mkdtempSync(join(tmpdir(), "flow-train-"));
    try {
      const data = await brightJsonl(join(dir, "data"), 4, 64);
      const r = await cli(["train", "--model", folder, "--data", data, "--lora", "--lora-rank", "2", "--steps", "3", "--batch", "2",
        "--resolution", "64", "--out", join(dir, "run"), "--checkpoint-every", "0", "--seed", "1", "--validate-every", "3", ...extra, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const j = r.json() as { step: number; finalPath: string; last: { loss: number } };
      assert.equal(j.step, 3);
      assert.ok(Number.isFinite(j.last.loss));
      const lines = (await import("node:fs")).readFileSync(join(dir, "run", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; loss?: number });
      const first = lines.find((l) => l.type === "step")!;
      assert.ok(Math.abs(first.loss! - Math.LN2) < 1e-6, `first loss ${first.loss}`);
      const keys = [...readSafetensorsSync(join(j.finalPath, "pytorch_lora_weights.safetensors")).tensors.keys()];
      assert.ok(keys.length > 0 && keys.every((k) => k.startsWith("transformer.")), keys[0]);
      assert.ok(keys.some((k) => k.includes(".ff.net.0.proj.lora_A")) && keys.some((k) => k.includes(".attn.add_k_proj.lora_B")));
      // the validation grid at step 3: 4 default prompts × (1 seed × base | current) of 64×64
      const grid = await sharp(join(dir, "run", "validation", "step-000003.png")).metadata();
      assert.deepEqual([grid.width, grid.height], [2 * 64 + 3 * 2, 4 * 64 + 5 * 2]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(folder, { recursive: true, force: true });
    }
  });
}
