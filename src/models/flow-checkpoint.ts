// Gradient checkpointing for the SD3 / Flux denoisers (the trainer's forwardCheckpointed), block
// by block as src/models/unet/checkpoint.ts does for the UNet: the binding has backward with a
// given output gradient but no custom autograd function, so the checkpointed forward and its
// backward are two calls.
//
// A transformer is a chain: pre (embeddings: the patch / x embedder, time + pooled text, context
// embedder) → stages (blocks; each maps a state of 1–2 token tensors, plus the shared time
// embedding, to the next state) → post (output norm, projection, unpatchify / unpack).
//   forward (no graph): keep every stage's input state and the time embedding;
//   backward(gradOut): post, then the stages last first, each recomputed from detached inputs that
//   record gradients, its output gradients backpropagated into its parameters and inputs (the time
//   embedding's gradient summed over all stages), then pre.
// Peak activation memory is one block's graph; the price is a second forward of every block.
import type { Tensor } from "../tensor/tensor.js";
import { enableGrad, noGrad } from "../tensor/ops.js";
import { tidy } from "../tensor/tensor.js";
import { cat, zeros } from "../tensor/index.js";
import type { SD3Transformer2DModel } from "./sd3/transformer.js";
import { fluxRotaryTables, latentImageIds, packLatents, unpackLatents, type FluxTransformer2DModel } from "./flux/transformer.js";

export interface CheckpointedRun {
  output: Tensor;
  backward(gradOutput: Tensor): void;
}

type Stage = (state: Tensor[], temb: Tensor) => Tensor[];

const leaf = (t: Tensor): Tensor => t.detach().setRequiresGrad(true);

/** Backward of several outputs at once through Σ_k sum(out_k · g_k). */
function backwardMany(outputs: Tensor[], grads: (Tensor | null)[]): void {
  let surrogate: Tensor | null = null;
  outputs.forEach((o, k) => {
    const g = grads[k];
    if (g === null || g === undefined || !o.requiresGrad) return;
    const term = o.mul(g).sum();
    surrogate = surrogate === null ? term : surrogate.add(term);
  });
  if (surrogate !== null) (surrogate as Tensor).backward();
}

function checkpointedChain(pre: () => { state: Tensor[]; temb: Tensor }, stages: Stage[], post: (state: Tensor[], temb: Tensor) => Tensor): CheckpointedRun {
  const inputs: Tensor[][] = [];
  let temb!: Tensor;
  let last!: Tensor[];
  const output = noGrad(() => {
    const p = pre();
    temb = p.temb;
    let state = p.state;
    for (const stage of stages) {
      inputs.push(state);
      state = stage(state, temb);
    }
    last = state;
    return post(state, temb);
  });
  const backward = (gradOutput: Tensor): void => enableGrad(() => tidy(() => {
    let tembGrad: Tensor | null = null;
    const addTemb = (g: Tensor | null) => {
      if (g === null) return;
      const prev = tembGrad;
      tembGrad = prev === null ? g : prev.add(g);
      prev?.dispose();
    };
    let grads: (Tensor | null)[] = tidy(() => {
      const xs = last.map(leaf), e = leaf(temb);
      post(xs, e).backward(gradOutput);
      return [...xs.map((x) => x.grad), e.grad];
    });
    addTemb(grads.pop() ?? null);
    for (let i = stages.length - 1; i >= 0; i--) {
      const g = grads;
      const r = tidy(() => {
        const xs = inputs[i]!.map(leaf), e = leaf(temb);
        backwardMany(stages[i]!(xs, e), g);
        return [...xs.map((x) => x.grad), e.grad];
      });
      for (const t of g) t?.dispose();
      addTemb(r.pop() ?? null);
      grads = r;
    }
    tidy(() => {
      const p = pre();
      backwardMany([...p.state, p.temb], [...grads, tembGrad]);
    });
  }));
  return { output, backward };
}

/** SD3: pos_embed + context_embedder + time_text_embed → joint blocks → norm_out, proj_out, unpatchify. */
export function sd3Checkpointed(tr: SD3Transformer2DModel, sample: Tensor, timestep: Tensor, states: Tensor, pooled: Tensor): CheckpointedRun {
  const c = tr.config;
  const [n, , hh, ww] = sample.shape as [number, number, number, number];
  const p = c.patchSize, h = Math.floor(hh / p), w = Math.floor(ww / p);
  const stages: Stage[] = tr.transformer_blocks.items.map((block) => (s, temb) => {
    const out = block.forward(s[0]!, s[1]!, temb);
    return out.c === null ? [out.x] : [out.x, out.c];
  });
  return checkpointedChain(
    () => ({ state: [tr.pos_embed.forward(sample), tr.context_embedder.forward(states.detach())], temb: tr.time_text_embed.forward(timestep, pooled.detach()) }),
    stages,
    (s, temb) => tr.proj_out.forward(tr.norm_out.forward(s[0]!, temb))
      .reshape([n, h, w, p, p, c.outChannels]).permute([0, 5, 1, 3, 2, 4]).reshape([n, c.outChannels, h * p, w * p]),
  );
}

/** Flux on unpacked latents: x_embedder(pack) + context + time → double blocks → [c; x] → single blocks → image tokens → norm_out, proj_out, unpack. */
export function fluxCheckpointed(tr: FluxTransformer2DModel, sample: Tensor, timestep: Tensor, states: Tensor, pooled: Tensor, guidance: Tensor | null): CheckpointedRun {
  const [n, , h, w] = sample.shape as [number, number, number, number];
  const lc = states.shape[1]!;
  const txtIds = zeros([n, lc, 3], { device: sample.device });
  const rope = fluxRotaryTables(cat([txtIds, latentImageIds(n, h, w, sample.device)], 1), tr.config.axesDimsRope);
  const stages: Stage[] = [
    ...tr.transformer_blocks.items.map((block): Stage => (s, temb) => { const o = block.forward(s[0]!, s[1]!, temb, rope); return [o.x, o.c]; }),
    (s) => [cat([s[1]!, s[0]!], 1)],
    ...tr.single_transformer_blocks.items.map((block): Stage => (s, temb) => [block.forward(s[0]!, temb, rope)]),
  ];
  return checkpointedChain(
    () => {
      const t = timestep.to("f32").mul(1000);
      const g = guidance ? guidance.to("f32").mul(1000) : null;
      return {
        state: [tr.x_embedder.forward(packLatents(sample)), tr.context_embedder.forward(states.detach())],
        temb: tr.time_text_embed.forward(t, pooled.detach(), g),
      };
    },
    stages,
    (s, temb) => unpackLatents(tr.proj_out.forward(tr.norm_out.forward(s[0]!.slice(1, lc), temb)), h, w),
  );
}
