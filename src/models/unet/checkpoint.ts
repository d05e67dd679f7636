// Gradient checkpointing per block for the UNet (what diffusers' enable_gradient_checkpointing
// does with torch.utils.checkpoint), written in TypeScript: the binding exposes backward with a
// given output gradient but no custom autograd function, so the checkpointed forward and its
// backward are two calls.
//
//   forward (no graph): conv_in, each down block, the middle block, each up block, the output
//     head, keeping only every block's input, the skip states and the time embedding;
//   backward(gradOut), last block first: recompute the block from detached inputs that require
//     grad, backpropagate the output gradient into its parameters and inputs, hand the input
//     gradients to the blocks that produced them (the skips collect theirs from the up blocks),
//     accumulate the time embedding's gradient over all blocks; then the time embedding (and
//     SDXL's add_embedding) and conv_in.
//
// Peak activation memory is one block's graph instead of the whole network's; the price is a
// second forward of every block. Gradients equal plain backward up to float rounding (tested).
import type { Tensor } from "../../tensor/tensor.js";
import { enableGrad, noGrad } from "../../tensor/ops.js";
import { tidy } from "../../tensor/tensor.js";
import type { AddedConditioning } from "../sdxl/conditioning.js";
import type { UNetParts } from "./parts.js";

export interface CheckpointedRun {
  /** The prediction, computed without an autograd graph. */
  output: Tensor;
  /** Backpropagates d(loss)/d(output) into the UNet's trainable parameters (accumulating .grad). */
  backward(gradOutput: Tensor): void;
}

/** A detached copy that records gradients: a block's input during recomputation. */
function leaf(t: Tensor): Tensor {
  return t.detach().setRequiresGrad(true);
}

/** Adds `g` into slot i of `acc` (null grads, from inputs that did not influence a trainable path, are skipped). */
function accumulate(acc: (Tensor | null)[], i: number, g: Tensor | null): void {
  if (g === null) return;
  const prev = acc[i] ?? null;
  acc[i] = prev === null ? g : prev.add(g);
  if (prev !== null) {
    prev.dispose();
    g.dispose();
  }
}

/** Backward of several outputs at once: Σ_k sum(out_k · g_k) has exactly those output gradients. */
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

export function checkpointedForward(
  unet: UNetParts, sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor, added?: AddedConditioning,
): CheckpointedRun {
  const c = unet.config;
  const prepared = unet.prepareInputs(sample, timestep, encoderHiddenStates, added);
  // the text encoders are frozen: no gradient flows to the conditioning
  const context = prepared.hidden.detach();
  const inputs = {
    ...prepared, hidden: context,
    added: prepared.added && { textEmbeds: prepared.added.textEmbeds.detach(), timeIds: prepared.added.timeIds.detach() },
  };
  const input = c.centerInputSample ? sample.mul(2).sub(1) : sample;
  const factor = 2 ** (unet.up_blocks.length - 1);
  const forwardSize = sample.shape.slice(2).some((s) => s % factor !== 0);

  // ---- forward without a graph, keeping block inputs, skips and the embedding ----
  const downIn: Tensor[] = [];
  const downSkipIdx: number[][] = [];
  const upIn: Tensor[] = [];
  const upSkipIdx: number[][] = [];
  const upSize: ([number, number] | undefined)[] = [];
  let midIn: Tensor | null = null;
  let headIn: Tensor;
  const skips: Tensor[] = [];
  let emb: Tensor;
  const output = noGrad(() => {
    emb = unet.embedding(inputs, sample.dtype);
    let h = unet.conv_in.forward(input);
    skips.push(h);
    for (const block of unet.down_blocks) {
      downIn.push(h);
      const out = block.forward(h, emb, context);
      downSkipIdx.push(out.skips.map((_, k) => skips.length + k));
      skips.push(...out.skips);
      h = out.h;
    }
    if (unet.mid_block) {
      midIn = h;
      h = unet.mid_block.forward(h, emb, context);
    }
    const open = skips.map((_, i) => i);
    for (let i = 0; i < unet.up_blocks.length; i++) {
      const block = unet.up_blocks.at(i);
      const mine = open.splice(open.length - block.resnets.length);
      const lastIdx = open[open.length - 1];
      const size = forwardSize && i < unet.up_blocks.length - 1 && lastIdx !== undefined
        ? [skips[lastIdx]!.shape[2]!, skips[lastIdx]!.shape[3]!] as [number, number] : undefined;
      upIn.push(h);
      upSkipIdx.push(mine);
      upSize.push(size);
      h = block.forward(h, mine.map((k) => skips[k]!), emb, context, size);
    }
    headIn = h;
    return unet.conv_out.forward(unet.conv_norm_out.forward(h).silu());
  });

  // Each block's recomputation runs in its own tidy() scope that keeps only the input gradients,
  // so one block's graph and activations are alive at a time.
  const backward = (gradOutput: Tensor): void => enableGrad(() => tidy(() => {
    const skipGrad: (Tensor | null)[] = skips.map(() => null);
    let embGrad: Tensor | null = null;
    const addEmb = (g: Tensor | null) => {
      if (g === null) return;
      const prev = embGrad;
      embGrad = prev === null ? g : prev.add(g);
      prev?.dispose();
    };
    // the output head
    let gradH: Tensor | null = tidy(() => {
      const x = leaf(headIn);
      unet.conv_out.forward(unet.conv_norm_out.forward(x).silu()).backward(gradOutput);
      return x.grad;
    });
    // up blocks, last first
    for (let i = unet.up_blocks.length - 1; i >= 0; i--) {
      const g = gradH;
      const r = tidy(() => {
        const x = leaf(upIn[i]!);
        const e = leaf(emb);
        const skipLeaves = upSkipIdx[i]!.map((k) => leaf(skips[k]!));
        const out = unet.up_blocks.at(i).forward(x, [...skipLeaves], e, context, upSize[i]);
        if (g !== null) out.backward(g);
        return { gx: x.grad, gs: skipLeaves.map((l) => l.grad), ge: e.grad };
      });
      g?.dispose();
      gradH = r.gx;
      upSkipIdx[i]!.forEach((k, j) => accumulate(skipGrad, k, r.gs[j]!));
      addEmb(r.ge);
    }
    if (unet.mid_block && midIn !== null) {
      const g = gradH;
      const mid = unet.mid_block;
      const r = tidy(() => {
        const x = leaf(midIn!);
        const e = leaf(emb);
        const out = mid.forward(x, e, context);
        if (g !== null) out.backward(g);
        return { gx: x.grad, ge: e.grad };
      });
      g?.dispose();
      gradH = r.gx;
      addEmb(r.ge);
    }
    // down blocks, last first: their outputs are skips (the last one is also the next block's input)
    for (let i = unet.down_blocks.length - 1; i >= 0; i--) {
      const idx = downSkipIdx[i]!;
      accumulate(skipGrad, idx[idx.length - 1]!, gradH);
      const grads = idx.map((k) => skipGrad[k] ?? null);
      const r = tidy(() => {
        const x = leaf(downIn[i]!);
        const e = leaf(emb);
        const out = unet.down_blocks.at(i).forward(x, e, context);
        backwardMany(out.skips, grads);
        return { gx: x.grad, ge: e.grad };
      });
      for (const k of idx) { skipGrad[k]?.dispose(); skipGrad[k] = null; }
      gradH = r.gx;
      addEmb(r.ge);
    }
    // conv_in (its output is skip 0 and the first block's input) and the time embedding
    accumulate(skipGrad, 0, gradH);
    const g0 = skipGrad[0];
    const h0 = unet.conv_in.forward(input);
    if (g0 !== null && g0 !== undefined && h0.requiresGrad) h0.backward(g0);
    const eg = embGrad as Tensor | null;
    const e = unet.embedding(inputs, sample.dtype);
    if (eg !== null && e.requiresGrad) e.backward(eg);
  }));

  return { output, backward };
}
