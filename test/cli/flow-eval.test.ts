// `diffusion-dpo eval` on the SD3 and Flux reference folders: a 2-step LoRA run and a 1-step full
// run (train --full: final/transformer/) against the base, with the `appeal` reward's win rates and
// implicit-reward accuracy on held-out pairs under the flow noising. The closed-form check: the
// base against itself gives inside = 0 for every pair (accuracy ½ exactly) and ties everywhere.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliRunner } from "./_capture.js";
import trainCommand from "../../src/cli/commands/train.js";
import evalCommand from "../../src/cli/commands/eval.js";
import { brightJsonl } from "./train-fixture.js";
import { referenceCase } from "../_reference.js";

const cli = cliRunner({ train: trainCommand, eval: evalCommand });

interface Summary {
  winRate: Record<string, { n: number; rate: number; wins: number; ties: number; losses: number }>;
  implicitAccuracy: { accuracy: number; pairs: number; draws: number; meanInside: number; ties: number } | null;
  config: { tunedKind: string; sampler: string; lora?: { rank: number } };
}

for (const caseName of ["sd3-pipeline", "flux-pipeline"] as const) {
  test(`eval --base <${caseName} folder>: LoRA run, full run and the base itself — appeal win rates, flow implicit accuracy`, async () => {
    const folder = referenceCase(caseName).pipelineFolder();
    const dir = mkdtempSync(join(tmpdir(), "flow-eval-"));
    try {
      const data = await brightJsonl(join(dir, "data"), 4, 64);
      const prompts = join(dir, "prompts.txt");
      writeFileSync(prompts, "a red ball\na cat\n");
      const train = async (out: string, extra: string[]) => {
        const r = await cli(["train", "--model", folder, "--data", data, "--batch", "2", "--resolution", "64", "--out", out,
          "--checkpoint-every", "0", "--validate-every", "0", "--seed", "1", "--lr", "1e-3", ...extra, "--json"]);
        assert.equal(r.code, 0, r.stderr);
      };
      await train(join(dir, "lora"), ["--lora", "--lora-rank", "2", "--steps", "2"]);
      await train(join(dir, "full"), ["--full", "--steps", "1", "--warmup", "0", "--no-scale-lr"]);
      const evaluate = async (tuned: string, out: string): Promise<Summary> => {
        const r = await cli(["eval", "--base", folder, "--tuned", tuned, "--prompts", prompts, "--seeds", "2", "--steps", "2",
          "--guidance", "1", "--size", "64", "--reward", "appeal", "--pairs", data, "--pairs-limit", "4", "--draws", "2",
          "--bootstrap", "50", "--out", out, "--no-embed-images", "--json"]);
        assert.equal(r.code, 0, r.stderr);
        const onDisk = JSON.parse(readFileSync(join(out, "eval.json"), "utf8")) as { summary: Summary; samples: unknown[] };
        assert.equal(onDisk.samples.length, 4, "2 prompts × 2 seeds");
        for (const f of ["report.html", "images/base/0.png", "images/tuned/3.png"]) assert.ok(existsSync(join(out, f)), f);
        const s = onDisk.summary;
        assert.equal(s.config.sampler, "flow_match_euler");
        const w = s.winRate.appeal!;
        assert.equal(w.n, 4);
        assert.equal(w.wins + w.ties + w.losses, 4);
        assert.ok(w.rate >= 0 && w.rate <= 1, `win rate ${w.rate}`);
        const a = s.implicitAccuracy!;
        assert.equal(a.pairs, 4);
        assert.equal(a.draws, 2);
        assert.ok(a.accuracy >= 0 && a.accuracy <= 1 && Number.isFinite(a.meanInside), JSON.stringify(a));
        console.log(`${caseName} vs ${s.config.tunedKind}: appeal ${w.wins} W / ${w.ties} T / ${w.losses} L, implicit accuracy ${a.accuracy} (mean inside ${a.meanInside.toExponential(2)})`);
        return s;
      };
      const lora = await evaluate(join(dir, "lora"), join(dir, "eval-lora"));
      assert.equal(lora.config.tunedKind, "lora");
      assert.equal(lora.config.lora?.rank, 2);
      assert.notEqual(lora.implicitAccuracy!.meanInside, 0, "the adapters change the predictions");
      const full = await evaluate(join(dir, "full"), join(dir, "eval-full"));
      assert.equal(full.config.tunedKind, "transformer");
      assert.notEqual(full.implicitAccuracy!.meanInside, 0, "the tuned transformer's predictions differ from the base's");
      // the base against itself: the same σ, ε and predictions on both sides → inside exactly 0
      const self = await evaluate(folder, join(dir, "eval-self"));
      assert.equal(self.config.tunedKind, "full");
      assert.equal(self.implicitAccuracy!.accuracy, 0.5);
      assert.equal(self.implicitAccuracy!.ties, 4);
      assert.equal(self.implicitAccuracy!.meanInside, 0);
      assert.equal(self.winRate.appeal!.ties, 4, "identical samples tie");
      // SD3 / Flux sample with FlowMatch Euler only: --sampler is a usage error naming the flag
      const bad = await cli(["eval", "--base", folder, "--tuned", join(dir, "lora"), "--prompts", prompts, "--sampler", "ddim", "--out", join(dir, "eval-bad")]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /--sampler is not supported for SD3 \/ Flux folders/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(folder, { recursive: true, force: true });
    }
  });
}
