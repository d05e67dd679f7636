// The parts of UNet2DConditionModel that its plain forward and the checkpointed forward
// (checkpoint.ts) both drive. Named here, below both, so that checkpoint.ts needs no import of
// unet.ts (which imports checkpoint.ts).
import type { Tensor } from "../../tensor/tensor.js";
import type { ModuleList } from "../../nn/module.js";
import type { Conv2d, GroupNorm } from "../../nn/layers.js";
import type { UNetConfig } from "./config.js";
import type { DownBlock, MidBlock, UpBlock } from "./blocks.js";
import type { AddedConditioning } from "../sdxl/conditioning.js";

/** prepareInputs' result. */
export interface UNetInputs {
  hidden: Tensor;
  added: AddedConditioning | undefined;
  /** [N] timesteps. */
  t: Tensor;
  batch: number;
}

export interface UNetParts {
  readonly config: UNetConfig;
  readonly conv_in: Conv2d;
  readonly down_blocks: ModuleList<DownBlock>;
  readonly mid_block: MidBlock | null;
  readonly up_blocks: ModuleList<UpBlock>;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  prepareInputs(sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor, added?: AddedConditioning): UNetInputs;
  embedding(inputs: UNetInputs, dtype: Tensor["dtype"]): Tensor;
}
