// Stage 3 with --rounds R > 1: iterative (on-policy) Diffusion-DPO. Round 1 trains on the pairs
// the base model made (stages 1–2); each later round samples K candidates per caption from the
// PREVIOUS round's policy for the next slice of training captions, labels them with the same
// reward, and trains again starting from that round's adapters (the reference stays the base
// model, as `train --init-from` does). Layout:
//
//   <out>/rounds/round-<r>/pairs.sqlite   round r's candidates (r ≥ 2; round 1 uses <out>/pairs.sqlite)
//   <out>/rounds/round-<r>/train          round r's training (the last round trains into <out>/train)
//   <out>/rounds/round-<r>/round.json     written when the round has finished (what resume skips)
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { EvalPrompt } from "../eval/prompts.js";
import type { RewardModel } from "../feedback/reward.js";
import type { DemoSettings } from "./settings.js";
import { labelStage } from "./stage-label.js";
import { pairsStage } from "./stage-pairs.js";
import { trainStage } from "./stage-train.js";
import { readJson, writeJsonAtomic } from "./stages.js";
import type { DemoPaths, Emit, LabelStageSummary, PairsStageSummary, RoundSummary, TrainStageSummary } from "./types.js";

/** Round r's training captions: the r-th slice of `pairsPrompts` captions, wrapping around the list. */
export function roundCaptions(train: readonly { prompt: string }[], round: number, perRound: number): string[] {
  return Array.from({ length: perRound }, (_, i) => train[((round - 1) * perRound + i) % train.length]!.prompt);
}

export function roundDir(paths: DemoPaths, round: number): string {
  return join(paths.rounds, `round-${round}`);
}

/** Round r's training folder (the last round's is <out>/train, which the eval stage reads). */
export function roundTrainDir(paths: DemoPaths, round: number, rounds: number): string {
  return round === rounds ? paths.train : join(roundDir(paths, round), "train");
}

export async function trainRounds(
  settings: DemoSettings, paths: DemoPaths, train: readonly EvalPrompt[], firstRound: { pairs: PairsStageSummary; labels: LabelStageSummary },
  loadReward: (spec: string) => RewardModel, emit: Emit,
): Promise<TrainStageSummary> {
  const R = settings.rounds;
  if (R === 1) return trainStage(settings, paths, emit);
  const done: RoundSummary[] = [];
  let last: TrainStageSummary | null = null;
  for (let r = 1; r <= R; r++) {
    const dir = roundDir(paths, r);
    const markPath = join(dir, "round.json");
    if (existsSync(markPath)) {
      const mark = readJson<RoundSummary>(markPath);
      done.push(mark);
      last = mark.train;
      emit({ type: "log", stage: "train", message: `round ${r}/${R}: done already, skipped` });
      continue;
    }
    const t0 = performance.now();
    const previous = r === 1 ? null : roundTrainDir(paths, r - 1, R);
    let pairs = firstRound.pairs;
    let labels = firstRound.labels.train;
    let pairsPath = paths.pairs;
    if (previous !== null) {
      pairsPath = join(dir, "pairs.sqlite");
      emit({ type: "log", stage: "train", message: `round ${r}/${R}: candidates from round ${r - 1}'s policy` });
      // a seed per round, so a caption met again in a later round gets fresh candidates
      pairs = await pairsStage(settings, { pairs: pairsPath, heldoutPairs: "" }, roundCaptions(train, r, settings.pairsPrompts), [], emit,
        previous, settings.seed + 7919 * (r - 1));
      labels = (await labelStage(settings, { pairs: pairsPath, heldoutPairs: null }, loadReward, emit)).train;
    }
    emit({ type: "log", stage: "train", message: `round ${r}/${R}: training${previous !== null ? ` from round ${r - 1}'s adapters` : ""}` });
    last = await trainStage(settings, { train: roundTrainDir(paths, r, R), pairs: pairsPath }, emit, previous);
    const mark: RoundSummary = { round: r, policy: previous ?? "base", pairs, labels, train: last, seconds: (performance.now() - t0) / 1000 };
    writeJsonAtomic(markPath, mark);
    done.push(mark);
  }
  return { ...last!, rounds: done };
}
