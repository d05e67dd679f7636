// FluxTransformer2DModel against the reference case flux-transformer (diffusers 0.30, float32),
// with and without the guidance embedding, plus FluxPipeline's latent packing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  FluxTransformer2DModel, fluxTransformerConfigFromJson, latentImageIds, packLatents, unpackLatents,
} from "../../src/models/flux/transformer.js";
import { readJsonObject } from "../../src/util/config-json.js";
import { loadWeightsInto } from "../../src/models/pipeline.js";
import { noGrad } from "../../src/tensor/index.js";
import { assertClose, referenceCase } from "../_reference.js";

const ref = referenceCase("flux-transformer");

export function loadFluxTransformer(dir: string): FluxTransformer2DModel {
  const cfgPath = join(dir, "config.json");
  const model = new FluxTransformer2DModel(fluxTransformerConfigFromJson(readJsonObject(cfgPath, "transformer"), cfgPath));
  loadWeightsInto(model, [join(dir, "diffusion_pytorch_model.safetensors")]);
  return model.eval();
}

test("flux packing: _pack_latents, _unpack_latents and image ids equal the recorded ones", () => {
  const unpacked = ref.tensor("latents_unpacked");
  assertClose(packLatents(unpacked), ref.tensor("hidden_states"), 0, "pack");
  assertClose(unpackLatents(ref.tensor("transformer_out"), 8, 8), ref.tensor("transformer_out_unpacked"), 0, "unpack");
  assertClose(latentImageIds(2, 8, 8), ref.tensor("img_ids"), 0, "img_ids");
});

for (const [folder, out] of [["transformer", "transformer_out"], ["transformer_guidance", "transformer_guidance_out"]] as const) {
  test(`flux-transformer ${folder}: forward equals diffusers`, () => {
    const model = loadFluxTransformer(join(ref.dir, folder));
    assert.equal(model.config.guidanceEmbeds, folder === "transformer_guidance");
    noGrad(() => {
      const y = model.forward({
        hiddenStates: ref.tensor("hidden_states"),
        encoderHiddenStates: ref.tensor("encoder_hidden_states"),
        pooledProjections: ref.tensor("pooled_projections"),
        timestep: ref.tensor("timestep"),
        imgIds: ref.tensor("img_ids"),
        txtIds: ref.tensor("txt_ids"),
        guidance: model.config.guidanceEmbeds ? ref.tensor("guidance") : null,
      });
      // measured: no guidance 2.6e-7, guidance 2.5e-7
      const err = assertClose(y, ref.tensor(out), 1e-5, out);
      console.log(`flux ${folder} relative error ${err.toExponential(2)}`);
    });
    model.dispose();
  });
}

test("flux-transformer: the 4-step FluxPipeline run from given embeddings (guidance embedding 3.5, dynamic shift)", async () => {
  const { flowMatchConfigFromJson, flowSetTimesteps, calculateShift, linspace64 } = await import("../../src/diffusion/flow/scheduler.js");
  const { flowSample } = await import("../../src/diffusion/flow/sample.js");
  const { full, zeros } = await import("../../src/tensor/index.js");
  const { relativeError } = await import("../_reference.js");
  const model = loadFluxTransformer(join(ref.dir, "transformer_guidance"));
  const cfgPath = join(ref.dir, "scheduler", "scheduler_config.json");
  const cfg = flowMatchConfigFromJson(readJsonObject(cfgPath, "scheduler"), cfgPath);
  const latents = ref.tensor("pipe_latents_init");
  const schedule = flowSetTimesteps(cfg, 4, { mu: calculateShift(latents.shape[1]!, cfg), sigmas: linspace64(1, 1 / 4, 4) });
  const states = ref.tensor("pipe_prompt_embeds");
  const imgIds = latentImageIds(1, 8, 8);
  const txtIds = zeros([1, states.shape[1]!, 3]);
  const steps: number[][] = [];
  const final = flowSample({
    latents,
    schedule,
    velocity: (x, t) => model.forward({
      hiddenStates: x, encoderHiddenStates: states, pooledProjections: ref.tensor("pipe_pooled_prompt_embeds"),
      timestep: full([1], t).div(1000), guidance: full([1], 3.5), imgIds, txtIds,
    }),
    onStep: (_, x) => steps.push(Array.from(x.toFloat32Array())),
  });
  // measured: final 1.6e-7, worst step 1.6e-7
  const err = assertClose(final, ref.tensor("pipe_final_latents"), 1e-4, "pipe_final_latents");
  const refSteps = ref.array("pipe_step_latents");
  const per = refSteps.length / 4;
  const stepErr = Math.max(...steps.map((s, i) => relativeError(s, refSteps.slice(i * per, (i + 1) * per))));
  assert.ok(stepErr < 1e-4, `step latents ${stepErr}`);
  console.log(`flux 4-step run: final ${err.toExponential(2)}, worst step ${stepErr.toExponential(2)}`);
  model.dispose();
});
