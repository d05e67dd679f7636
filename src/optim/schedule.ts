// Learning-rate schedules with diffusers' get_scheduler semantics: the multiplier for optimizer
// step k (0-based) is λ(k), so with warmup the first update uses lr·0, exactly as LambdaLR does.

export type LrScheduleKind = "constant" | "constant_with_warmup" | "linear" | "cosine";
export const LR_SCHEDULES: readonly LrScheduleKind[] = ["constant", "constant_with_warmup", "linear", "cosine"];

export interface LrSchedule {
  kind: LrScheduleKind;
  warmupSteps: number;
  totalSteps: number;
}

export function lrMultiplier(step: number, s: LrSchedule): number {
  const warm = s.kind === "constant" ? 0 : s.warmupSteps;
  if (step < warm) return step / Math.max(1, warm);
  switch (s.kind) {
    case "constant":
    case "constant_with_warmup":
      return 1;
    case "linear":
      return Math.max(0, (s.totalSteps - step) / Math.max(1, s.totalSteps - warm));
    case "cosine": {
      const progress = (step - warm) / Math.max(1, s.totalSteps - warm);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
    }
  }
}

export function lrAt(step: number, baseLr: number, s: LrSchedule): number {
  return baseLr * lrMultiplier(step, s);
}
