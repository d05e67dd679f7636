// The sub-command table; each entry loads its module only when that command runs.
import type { CommandDef, SubCommandsDef } from "citty";

const lazy = (load: () => Promise<{ default: CommandDef<any> }>) => async () => (await load()).default;

export const commands: SubCommandsDef = {
  info: lazy(() => import("./info.js")),
  pretrain: lazy(() => import("./pretrain.js")),
  sample: lazy(() => import("./sample.js")),
  demo: lazy(() => import("./demo.js")),
  eval: lazy(() => import("./eval.js")),
  train: lazy(() => import("./train.js")),
  cache: lazy(() => import("./cache.js")),
  serve: lazy(() => import("./serve.js")),
  reward: lazy(() => import("./reward.js")),
  pairs: lazy(() => import("./pairs.js")),
  label: lazy(() => import("./label.js")),
  export: lazy(() => import("./export.js")),
  lora: lazy(() => import("./lora.js")),
  merge: lazy(() => import("./merge.js")),
  "export-checkpoint": lazy(() => import("./export-checkpoint.js")),
  "import-checkpoint": lazy(() => import("./import-checkpoint.js")),
};
