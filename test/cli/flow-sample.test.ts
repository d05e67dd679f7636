// `diffusion-dpo sample` on the SD3 and Flux reference folders: seed 20 draws exactly the case's
// latents_init (torch.randn on a CPU generator seeded 20), so the PNG must be diffusers' image.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliRunner } from "./_capture.js";
import sampleCommand from "../../src/cli/commands/sample.js";
import { readImage } from "../../src/sample/png.js";
import { referenceCase } from "../_reference.js";

const cli = cliRunner({ sample: sampleCommand });

for (const [caseName, family] of [["sd3-pipeline", "sd3"], ["flux-pipeline", "flux"]] as const) {
  test(`sample --model <${caseName} folder> --seed 20: the PNG is diffusers' image (±1 grey level)`, async () => {
    const ref = referenceCase(caseName);
    const v = ref.json.values as { prompt: string; guidance_scale: number; num_inference_steps: number; height: number };
    const folder = ref.pipelineFolder();
    const out = mkdtempSync(join(tmpdir(), "flow-sample-"));
    try {
      const r = await cli(["sample", "--model", folder, "--prompt", v.prompt, "--seed", "20", "--steps", String(v.num_inference_steps),
        "--guidance", String(v.guidance_scale), "--size", String(v.height), "--max-sequence-length", "32", "--out", out, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const j = r.json() as { family: string; files: string[]; size: number };
      assert.equal(j.family, family);
      assert.equal(j.size, v.height);
      const img = await readImage(j.files[0]!);
      const want = ref.array("image").map((x) => Math.round(x * 255));
      assert.equal(img.data.length, want.length);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(img.data[i]! - want[i]!));
      console.log(`${caseName}: max grey-level difference ${worst}`);
      assert.ok(worst <= 1, `max grey-level difference ${worst}`);
    } finally {
      rmSync(out, { recursive: true, force: true });
      rmSync(folder, { recursive: true, force: true });
    }
  });
}
