// runDemo end to end on a tiny 8×8 model with test rewards: every stage's outputs, a well-formed
// summary whose figures agree with numbers recomputed here from eval.json and the stores, resume
// after completion redoing nothing, an interrupted training stage resuming from its checkpoint,
// and the refusals (re-run without --resume, changed knobs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve as resolvePath } from "node:path";
import { defineCommand } from "citty";
import { runCli } from "../../src/cli/run.js";
import demoCommand, { settingsFromArgs } from "../../src/cli/commands/demo.js";
import { PreferenceStore } from "../../src/data/store.js";
import { decodeImage } from "../../src/data/images.js";
import { DEMO_STAGES, demoPaths, runDemo, type DemoEvent, type DemoSummary } from "../../src/demo/runDemo.js";
import { DemoError, resolveSettings, resumedSettings, type DemoSettings } from "../../src/demo/settings.js";
import { demoPromptSets, evaluationPool, roundRobin, splitHeldout } from "../../src/demo/prompts.js";
import { roundCaptions } from "../../src/demo/stage-rounds.js";
import { demoTrainConfig } from "../../src/demo/stage-train.js";
import { listEmoji } from "../../src/datasets/emoji.js";
import type { EvalJson } from "../../src/eval/evaluate.js";
import type { RewardModel } from "../../src/feedback/reward.js";
import { disposeTextToImageModel, saveModelFolder } from "../../src/models/pipeline.js";
import { tinyModel } from "../eval/_fixtures.js";

const dir = mkdtempSync(join(tmpdir(), "dpo-demo-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const modelDir = join(dir, "base");
{
  const m = tinyModel(0);
  saveModelFolder(modelDir, m);
  disposeTextToImageModel(m);
}

/** Mean byte / 255, computed here; "dark" is its negation (so its win rate mirrors brightness'). */
const meanByte = (im: { data: Uint8Array }) => im.data.reduce((a, v) => a + v, 0) / im.data.length / 255;
const rewards: Record<string, RewardModel> = {
  bright: { name: "bright", description: "mean pixel value", async score(images) { return images.map(meanByte); } },
  dark: { name: "dark", description: "minus the mean pixel value", async score(images) { return images.map((im) => -meanByte(im)); } },
};
const loadReward = (spec: string): RewardModel => {
  const r = rewards[spec];
  if (!r) throw new Error(`no test reward ${spec}`);
  return r;
};

const prompts = {
  train: ["a red ball", "a blue cat", "a green tree", "a yellow sun", "a black dog"].map((prompt) => ({ prompt, category: "Objects" })),
  heldout: [
    { prompt: "a white house", category: "Travel & Places" }, { prompt: "a grey cloud", category: "Animals & Nature" },
    { prompt: "an orange car", category: "Travel & Places" }, { prompt: "a pink flower", category: "Animals & Nature" },
  ],
};

const tiny: Partial<DemoSettings> = {
  model: modelDir, pairsPrompts: 4, heldoutPairsPrompts: 2, k: 2, sampleSteps: 2, guidance: 2, labelReward: "bright",
  otherRewards: ["dark"], steps: 3, batch: 2, warmup: 0, lr: 1e-2, beta: 100, loraRank: 2, loraAlpha: 2,
  evalPrompts: 2, seeds: 2, implicitDraws: 2, checkpointEvery: 2,
};

async function run(out: string, extra: { resume?: boolean; settings?: Partial<DemoSettings> } = {}): Promise<{ summary: DemoSummary; events: DemoEvent[] }> {
  const events: DemoEvent[] = [];
  const summary = await runDemo({
    out, resume: extra.resume, settings: extra.settings ?? tiny, prompts, loadReward, command: "test", onEvent: (e) => events.push(e),
  });
  return { summary, events };
}

const mtime = (p: string) => statSync(p).mtimeMs;

test("runDemo: every stage's outputs, a well-formed summary, resume redoes nothing, an interrupted training resumes", async () => {
  const out = join(dir, "run");
  const p = demoPaths(out);
  const { summary: s, events } = await run(out);

  // ---- the stages ran in order, each announced and finished ----
  assert.deepEqual(events.filter((e) => e.type === "stage").map((e) => e.type === "stage" && `${e.stage}:${e.skipped}`), DEMO_STAGES.map((st) => `${st}:false`));
  assert.deepEqual(events.filter((e) => e.type === "stage-done").map((e) => e.type === "stage-done" && e.stage), [...DEMO_STAGES]);
  assert.ok(events.some((e) => e.type === "progress" && e.stage === "train" && e.done === 3 && e.total === 3), "train progress reaches 3/3");
  assert.equal(events.at(-1)?.type, "done");

  // ---- 1. pairs: K = 2 candidates per caption, one pair each, in two stores ----
  const trainStore = new PreferenceStore(p.pairs);
  const heldStore = new PreferenceStore(p.heldoutPairs);
  try {
    assert.deepEqual({ prompts: trainStore.counts().prompts, images: trainStore.counts().images, pairs: trainStore.counts().pairs }, { prompts: 4, images: 8, pairs: 4 });
    assert.deepEqual({ prompts: heldStore.counts().prompts, images: heldStore.counts().images, pairs: heldStore.counts().pairs }, { prompts: 2, images: 4, pairs: 2 });
    // held-out pair captions are disjoint from the evaluation captions (4 held-out captions: 2 + 2)
    const heldPrompts = heldStore.pairIds().map((id) => heldStore.pair(id)!.prompt).sort();
    assert.deepEqual(heldPrompts, ["a pink flower", "an orange car"]);
    // ---- 2. labels: every pair labelled by "bright", the winner being the brighter image (recomputed) ----
    for (const store of [trainStore, heldStore]) {
      for (const id of store.pairIds()) {
        const pair = store.pair(id)!;
        const labels = store.labelsFor(id);
        assert.deepEqual(labels.map((l) => l.reward), ["bright"]);
        const a = meanByte(await decodeImage(store.imageBytes(pair.imageA), { source: "t", row: 0, field: "a" }));
        const b = meanByte(await decodeImage(store.imageBytes(pair.imageB), { source: "t", row: 0, field: "b" }));
        assert.ok(Math.abs(labels[0]!.scoreA - a) < 1e-6 && Math.abs(labels[0]!.scoreB - b) < 1e-6);
      }
    }
    assert.equal(s.labels.train.labelled, 4);
    assert.equal(s.labels.heldout.labelled, 2);
  } finally {
    trainStore.close();
    heldStore.close();
  }

  // ---- 3. train: LoRA weights, 3 logged steps, checkpoints ----
  assert.ok(existsSync(join(p.train, "final", "pytorch_lora_weights.safetensors")));
  const stepsLogged = () => readFileSync(join(p.train, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; step: number })
    .filter((r) => r.type === "step").map((r) => r.step);
  assert.deepEqual(stepsLogged(), [1, 2, 3]);
  assert.equal(s.train.steps, 3);
  assert.equal(s.train.usablePairs, 4 - s.labels.train.ties);
  assert.ok(s.train.finalLoss !== null && Number.isFinite(s.train.finalLoss));

  // ---- 4. eval: the summary's figures agree with eval.json's per-sample scores ----
  const ev = JSON.parse(readFileSync(join(p.eval, "eval.json"), "utf8")) as EvalJson;
  assert.equal(ev.samples.length, 4, "2 held-out captions × 2 seeds");
  assert.deepEqual(ev.samples.map((x) => x.prompt), ["a white house", "a white house", "a grey cloud", "a grey cloud"]);
  for (const name of ["bright", "dark"]) {
    let wins = 0, ties = 0;
    for (const x of ev.samples) {
      const d = x.scores[name]!.tuned - x.scores[name]!.base;
      if (d > 0) wins++;
      else if (d === 0) ties++;
    }
    assert.equal(s.winRate[name]!.n, 4);
    assert.ok(Math.abs(s.winRate[name]!.rate - (wins + ties / 2) / 4) < 1e-12, `${name} win rate recomputed`);
    assert.ok(s.winRate[name]!.interval[0] <= s.winRate[name]!.rate && s.winRate[name]!.rate <= s.winRate[name]!.interval[1]);
  }
  assert.ok(Math.abs(s.winRate.bright!.rate + s.winRate.dark!.rate - 1) < 1e-12, "dark mirrors bright");
  assert.equal(s.implicitAccuracy?.pairs, 2);
  assert.equal(s.implicitAccuracy?.draws, 2);
  assert.ok(s.implicitAccuracy!.accuracy >= 0 && s.implicitAccuracy!.accuracy <= 1);
  assert.ok(s.diversity !== null && Math.abs(s.diversity.change - (s.diversity.tuned / s.diversity.base - 1)) < 1e-12);

  // ---- 5. report + summary ----
  const html = readFileSync(p.report, "utf8");
  assert.match(html, /The demo run/);
  assert.match(html, /data:image\/png;base64,/);
  assert.ok(html.indexOf("The demo run") < html.indexOf("<h2>Headline</h2>"));
  assert.ok(existsSync(join(p.eval, "report.html")));
  const onDisk = JSON.parse(readFileSync(p.summary, "utf8")) as DemoSummary;
  assert.deepEqual(onDisk.winRate, s.winRate);
  assert.equal(s.report, p.report);
  assert.deepEqual(s.targets.map((t) => t.met), [s.winRate.bright!.rate >= 0.7, s.winRate.dark!.rate >= 0.6, s.implicitAccuracy!.accuracy >= 0.65, s.diversity.change >= -0.2]);
  for (const st of DEMO_STAGES) {
    assert.ok(existsSync(join(out, "stages", `${st}.json`)), `${st} marked done`);
    assert.ok(s.stageSeconds[st] > 0, `${st} timed`);
  }
  assert.ok(Math.abs(s.totalSeconds - DEMO_STAGES.reduce((a, st) => a + s.stageSeconds[st], 0)) < 1e-9);
  assert.deepEqual(s.skipped, []);

  // ---- resume after completion: every stage skipped, no file rewritten, same figures ----
  const watched = [p.pairs, p.heldoutPairs, join(p.train, "final", "pytorch_lora_weights.safetensors"), join(p.eval, "eval.json"), p.report];
  const before = watched.map(mtime);
  // every knob present but undefined, as the CLI passes the flags it was not given: the saved ones hold
  const notGiven = Object.fromEntries(Object.keys(s.settings).map((k) => [k, undefined])) as Partial<DemoSettings>;
  const again = await run(out, { resume: true, settings: notGiven });
  assert.deepEqual(again.events.filter((e) => e.type === "stage").map((e) => e.type === "stage" && e.skipped), DEMO_STAGES.map(() => true));
  assert.equal(again.events.filter((e) => e.type === "progress").length, 0, "no work done");
  assert.deepEqual(watched.map(mtime), before);
  assert.deepEqual(again.summary.winRate, s.winRate);
  assert.deepEqual(again.summary.stageSeconds, s.stageSeconds);
  assert.deepEqual(again.summary.skipped, [...DEMO_STAGES]);
  assert.deepEqual(again.summary.settings, s.settings);

  // ---- refusals ----
  await assert.rejects(run(out), (e: Error) => e instanceof DemoError && /already holds a demo run.*--resume/.test(e.message));
  await assert.rejects(run(out, { resume: true, settings: { steps: 5 } }), (e: Error) => e instanceof DemoError && /steps was 3, now 5/.test(e.message));

  // ---- an interrupted training stage (killed after its step-2 checkpoint) resumes from it ----
  rmSync(join(p.train, "final"), { recursive: true });
  rmSync(join(p.train, "checkpoints", "step-000003"), { recursive: true });
  for (const st of ["train", "eval", "report"]) rmSync(join(out, "stages", `${st}.json`));
  const pairsBefore = mtime(p.pairs);
  const resumed = await run(out, { resume: true, settings: {} });
  assert.deepEqual(resumed.summary.skipped, ["pairs", "label"]);
  assert.equal(mtime(p.pairs), pairsBefore);
  assert.match(resumed.summary.train.resumedFrom ?? "", /step-000002$/);
  assert.deepEqual(resumed.events.filter((e) => e.type === "progress" && e.stage === "train").map((e) => e.type === "progress" && e.done), [3]);
  assert.deepEqual(stepsLogged(), [1, 2, 3], "the log keeps each step once");
  assert.ok(existsSync(join(p.train, "final", "pytorch_lora_weights.safetensors")));
  // exact resume: the same final weights → the same evaluation
  assert.deepEqual(resumed.summary.winRate, s.winRate);
});

test("runDemo --full on a v-prediction model: a full model folder, trained on the model's own target", async () => {
  const vModel = join(dir, "base-v");
  const m = tinyModel(0);
  m.scheduler = { ...m.scheduler, predictionType: "v_prediction" };
  saveModelFolder(vModel, m);
  disposeTextToImageModel(m);
  const out = join(dir, "full");
  const { summary } = await run(out, { settings: { ...tiny, model: vModel, finetune: "full", lr: 1e-3, steps: 2 } });
  assert.ok(existsSync(join(demoPaths(out).train, "final", "model_index.json")));
  const cfg = JSON.parse(readFileSync(join(demoPaths(out).train, "final", "training_config.json"), "utf8")) as { predictionType: string; finetune: string };
  assert.deepEqual([cfg.predictionType, cfg.finetune], ["v_prediction", "full"]);
  assert.equal(summary.settings.finetune, "full");
  assert.equal(summary.train.steps, 2);
  assert.equal(summary.winRate.bright!.n, 4);
});

test("runDemo --rounds 2: round 2 samples from round 1's policy on the next captions, trains on from its adapters, win rate per round", async () => {
  const out = join(dir, "rounds");
  const settings = { ...tiny, pairsPrompts: 2, rounds: 2 };
  const { summary } = await run(out, { settings });
  const p = demoPaths(out);
  const r1Train = join(p.rounds, "round-1", "train");
  assert.ok(existsSync(join(r1Train, "final", "pytorch_lora_weights.safetensors")), "round 1's adapters");
  assert.ok(existsSync(join(p.train, "final", "pytorch_lora_weights.safetensors")), "the last round trains into <out>/train");
  // round 2's candidates: the 3rd and 4th training captions, sampled from round 1's policy
  const store = new PreferenceStore(join(p.rounds, "round-2", "pairs.sqlite"));
  try {
    const images = store.pairIds().flatMap((id) => { const pair = store.pair(id)!; return [store.image(pair.imageA)!, store.image(pair.imageB)!]; });
    assert.ok(images.length > 0);
    assert.deepEqual([...new Set(images.map((im) => im.model))], [resolvePath(r1Train)]);
    const promptsSeen = new Set(store.pairIds().map((id) => store.pair(id)!.prompt));
    assert.deepEqual([...promptsSeen].sort(), ["a green tree", "a yellow sun"]);
  } finally {
    store.close();
  }
  // round 1 starts at the base (adapters zero: policy = reference at step 1); round 2 from round 1's adapters
  const firstStep = (d: string) => JSON.parse(readFileSync(join(d, "metrics.jsonl"), "utf8").split("\n")[0]!) as { policyMse: number; referenceMse: number };
  const s1 = firstStep(r1Train);
  const s2 = firstStep(p.train);
  // equal up to float rounding: with pipelined steps (2 threads) the first part's reference errors
  // come from a forward on 1 thread, its policy's from one on 2
  const rel = (s: { policyMse: number; referenceMse: number }) => Math.abs(s.policyMse - s.referenceMse) / s.referenceMse;
  assert.ok(rel(s1) <= 1e-6, `round 1 starts at the base: policy ${s1.policyMse} vs reference ${s1.referenceMse}`);
  assert.ok(rel(s2) > 1e-4, `round 2 starts from trained adapters: policy ${s2.policyMse} vs reference ${s2.referenceMse}`);
  assert.deepEqual(summary.train.rounds!.map((r) => [r.round, r.policy]), [[1, "base"], [2, r1Train]]);
  assert.ok(summary.train.rounds![1]!.pairs.trainPairs > 0 && summary.train.rounds![1]!.labels.labelled === summary.train.rounds![1]!.pairs.trainPairs);
  assert.deepEqual(summary.roundWinRates!.map((w) => [w.round, w.n]), [[1, 4], [2, 4]]);
  assert.deepEqual(summary.roundWinRates![1]!.rate, summary.winRate.bright!.rate, "the last round's rate is the headline's");
  assert.match(readFileSync(p.report, "utf8"), /2 on-policy rounds/);
  // resume: both rounds are done
  const again = await run(out, { resume: true, settings: {} });
  assert.deepEqual(again.summary.train.rounds!.map((r) => r.round), [1, 2]);
  assert.equal(again.events.filter((e) => e.type === "progress").length, 0, "no work done");
});

test("demo prompt sets: round-robin over categories, training and held-out captions disjoint", () => {
  const sets = demoPromptSets(0);
  const items = listEmoji({ skinTones: false });
  const held = new Set(items.filter((i) => i.heldout).map((i) => i.caption));
  assert.equal(sets.train.length + sets.heldout.length, items.length);
  assert.ok(sets.train.every((p) => !held.has(p.prompt)));
  assert.ok(sets.heldout.every((p) => held.has(p.prompt)));
  // the first 9 of each set: one caption per category
  for (const s of [sets.train, sets.heldout]) assert.equal(new Set(s.slice(0, 9).map((p) => p.category)).size, 9);
  assert.deepEqual(demoPromptSets(0), sets, "deterministic");
  assert.notDeepEqual(demoPromptSets(1).train.slice(0, 9), sets.train.slice(0, 9), "the seed reorders");
  assert.equal(roundRobin([], 0).length, 0);
  const h = sets.heldout;
  assert.deepEqual(splitHeldout(h, 3, 2), { evalPrompts: h.slice(0, 3), pairPrompts: h.slice(3, 5) });
  assert.deepEqual(splitHeldout(h, h.length, 2).pairPrompts, h.slice(0, 2), "wraps when there are not enough");
  assert.throws(() => splitHeldout(h, h.length + 1, 1), /only \d+ held-out captions/);
});

test("demo evaluation pool: held-out emoji, or pretraining emoji captions no round of DPO trains on", async () => {
  const sets = demoPromptSets(0);
  assert.equal(evaluationPool(sets, "heldout-emoji", 96, 1).pool, sets.heldout);
  for (const rounds of [1, 3]) {
    const { pool } = evaluationPool(sets, "dpo-unseen", 96, rounds);
    const trained = new Set(Array.from({ length: rounds }, (_, r) => roundCaptions(sets.train, r + 1, 96)).flat());
    assert.equal(trained.size, 96 * rounds);
    assert.equal(pool.length, sets.train.length - 96 * rounds);
    assert.ok(pool.every((p) => !trained.has(p.prompt)), "no evaluation caption is trained on");
    const held = new Set(sets.heldout.map((p) => p.prompt));
    assert.ok(pool.every((p) => !held.has(p.prompt)), "and every one is of an emoji the base model was pretrained on");
    // the first evaluation captions still spread over the categories (round-robin order continues)
    assert.ok(new Set(pool.slice(0, 32).map((p) => p.category)).size >= 8);
  }
  assert.equal(evaluationPool(sets, "dpo-unseen", sets.train.length, 2).pool.length, 0);
  // too few captions left: refused before any work, naming the pool
  const out = join(dir, "pool-refused");
  await assert.rejects(runDemo({ out, prompts, loadReward, settings: { ...tiny, evalCaptions: "dpo-unseen" } }),
    (e: unknown) => e instanceof DemoError && /2 evaluation prompts asked for, but there are only 1 pretraining emoji captions left after the 4 that DPO trains on/.test(e.message));
  assert.ok(!existsSync(join(out, "pairs.sqlite")));
});

test("demo settings: defaults, lr by fine-tuning mode, bad knobs named", () => {
  assert.equal(resolveSettings({}).lr, 1e-3);
  assert.equal(resolveSettings({ finetune: "full" }).lr, 1e-4);
  assert.equal(resolveSettings({ finetune: "full", lr: 5e-5 }).lr, 5e-5);
  assert.throws(() => resolveSettings({ k: 1 }), /k must be an integer ≥ 2/);
  assert.throws(() => resolveSettings({ otherRewards: ["alignment"] }), /must not include the labelling reward/);
  assert.deepEqual(settingsFromArgs({ full: true, k: "3", beta: "2500", otherRewards: "category, appeal", promptDropout: "0" }), {
    ...Object.fromEntries(Object.keys(settingsFromArgs({})).map((k) => [k, undefined])),
    finetune: "full", k: 3, beta: 2500, otherRewards: ["category", "appeal"], promptDropout: 0,
  });
  assert.throws(() => resolveSettings({ promptDropout: 1.5 }), /promptDropout must be in \[0, 1\]/);
  assert.equal(resolveSettings({}).sftWeight, 0, "the paper's loss by default");
  assert.equal(resolveSettings({}).evalCaptions, "heldout-emoji");
  assert.equal(settingsFromArgs({ evalCaptions: "dpo-unseen" }).evalCaptions, "dpo-unseen");
  assert.throws(() => settingsFromArgs({ evalCaptions: "train" }), /--eval-captions train: use one of heldout-emoji, dpo-unseen/);
  assert.throws(() => resolveSettings({ evalCaptions: "x" as DemoSettings["evalCaptions"] }), /evalCaptions must be one of/);
  assert.equal(settingsFromArgs({ sftWeight: "125" }).sftWeight, 125);
  assert.throws(() => resolveSettings({ sftWeight: -1 }), /sftWeight must be a non-negative number/);
  const saved = resolveSettings({}) as Partial<DemoSettings>;
  delete saved.sftWeight; // a run saved before the knob existed resumes with the paper's loss
  assert.equal(resumedSettings(saved as DemoSettings, {}).sftWeight, 0);
  assert.equal(demoTrainConfig(resolveSettings({ sftWeight: 40 }), { train: join(dir, "t"), pairs: join(dir, "p.sqlite") }, "v_prediction", false).sftWeight, 40);
});

test("demo resume settings: a new fine-tuning mode takes its own default lr unless one was set by hand", () => {
  const lora = resolveSettings({});
  const notGiven = settingsFromArgs({});
  assert.equal(resumedSettings(lora, { ...notGiven, finetune: "full" }).lr, 1e-4, "LoRA's default lr is not carried into full");
  assert.equal(resumedSettings(resolveSettings({ finetune: "full" }), { finetune: "lora" }).lr, 1e-3);
  assert.equal(resumedSettings(resolveSettings({ lr: 5e-4 }), { finetune: "full" }).lr, 5e-4, "a hand-set lr is kept");
  assert.equal(resumedSettings(lora, { finetune: "full", lr: 3e-5 }).lr, 3e-5);
  assert.equal(resumedSettings(lora, { finetune: "lora" }).lr, 1e-3, "same mode: saved lr kept");
  const kept = resumedSettings({ ...lora, beta: 2000 }, { ...notGiven, steps: 7 });
  assert.equal(kept.beta, 2000, "knobs not given keep the saved values");
  assert.equal(kept.steps, 7);
});

test("demo command: usage errors name the flag; --help lists the knobs with defaults", async () => {
  const root = defineCommand({ meta: { name: "diffusion-dpo" }, subCommands: { demo: demoCommand } });
  const cli = async (argv: string[]) => {
    let stdout = "", stderr = "";
    const code = await runCli(root, argv, { stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; } });
    return { code, stdout, stderr };
  };
  const help = await cli(["demo", "--help"]);
  assert.equal(help.code, 0);
  for (const flag of ["--out", "--resume", "--full", "--pairsPrompts", "--k", "--steps", "--beta", "--sftWeight", "--lr", "--loraRank", "--promptDropout", "--evalPrompts", "--seeds", "--json"]) {
    assert.ok(help.stdout.includes(flag), `--help lists ${flag}`);
  }
  const bad = await cli(["demo", "--k", "1", "--out", join(dir, "never")]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--k must be an integer ≥ 2, got "1"/);
  const both = await cli(["demo", "--full", "--lora", "--out", join(dir, "never")]);
  assert.match(both.stderr, /--full and --lora disagree/);
  const missing = await cli(["demo", "--model", join(dir, "nope"), "--out", join(dir, "never")]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /not a diffusers model folder/);
  assert.doesNotMatch(missing.stderr, /--debug/, "a usage error, no stack-trace hint");
});
