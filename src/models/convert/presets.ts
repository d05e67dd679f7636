// Block layouts of the public base models, so a LoRA can be renamed for kohya without the base
// model's folder: SD1.x and SD2.x share one layout (4 levels, 2 resnets each, attention in the top
// three), SDXL has 3 levels with attention in the lower two.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { NameTableError, unetLayoutFromConfig, type UNetBlockLayout } from "./unet-names.js";

const SD_LAYOUT_JSON = {
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  layers_per_block: 2,
};
const SDXL_LAYOUT_JSON = {
  down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  layers_per_block: 2,
};

export const UNET_LAYOUT_PRESETS: Record<"sd1" | "sd2" | "sdxl", UNetBlockLayout> = {
  sd1: unetLayoutFromConfig(SD_LAYOUT_JSON, "sd1 preset"),
  sd2: unetLayoutFromConfig(SD_LAYOUT_JSON, "sd2 preset"),
  sdxl: unetLayoutFromConfig(SDXL_LAYOUT_JSON, "sdxl preset"),
};

/** A layout from "sd1" / "sd2" / "sdxl" or a model folder (only its unet/config.json is read). */
export function unetLayoutFor(spec: string): UNetBlockLayout {
  if (spec in UNET_LAYOUT_PRESETS) return UNET_LAYOUT_PRESETS[spec as keyof typeof UNET_LAYOUT_PRESETS];
  const config = join(spec, "unet", "config.json");
  if (!existsSync(spec) || !statSync(spec).isDirectory() || !existsSync(config)) {
    throw new NameTableError(`${spec}: neither sd1, sd2, sdxl nor a model folder with unet/config.json`);
  }
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(config, "utf8"));
  } catch (err) {
    throw new NameTableError(`${config} is not valid JSON (${(err as Error).message})`);
  }
  return unetLayoutFromConfig(json as Record<string, unknown>, config);
}
