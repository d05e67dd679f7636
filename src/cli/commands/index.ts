// The sub-command table; each entry loads its module only when that command runs.
import type { CommandDef, SubCommandsDef } from "citty";

const lazy = (load: () => Promise<{ default: CommandDef<any> }>) => async () => (await load()).default;

export const commands: SubCommandsDef = {
  info: lazy(() => import("./info.js")),
  serve: lazy(() => import("./serve.js")),
};
