// Re-exports only: the flow-matching model families (T5 encoder + tokenizer, SD3, Flux) and Flow-DPO glue.
export { T5EncoderModel, T5LayerNorm, t5EncoderConfigFromJson, relativePositionBuckets, type T5EncoderConfig, type T5Activation } from "./t5/encoder.js";
export { T5Tokenizer, type T5EncodedBatch } from "./t5/tokenizer.js";
export { SentencePieceUnigram, parseModelProto, PieceType, type SentencePieceModelProto } from "./t5/sentencepiece.js";
export {
  SD3Transformer2DModel, sd3TransformerConfigFromJson, sd3TransformerConfigToJson, sincosPosEmbed2d,
  type SD3TransformerConfig, type SD3ForwardInput,
} from "./sd3/transformer.js";
export {
  loadSD3Pipeline, disposeSD3Pipeline, encodeSD3Prompt, generateSD3, sd3ClipEmbeds, t5PromptEmbeds,
  type SD3Pipeline, type SD3PromptEmbeds, type SD3GenerateOptions, type SD3GenerateResult,
} from "./sd3/pipeline.js";
export {
  FluxTransformer2DModel, fluxTransformerConfigFromJson, fluxTransformerConfigToJson, fluxRotaryTables, applyRotary,
  packLatents, unpackLatents, latentImageIds, type FluxTransformerConfig, type FluxForwardInput,
} from "./flux/transformer.js";
export {
  loadFluxPipeline, disposeFluxPipeline, encodeFluxPrompt, generateFlux, fluxLatentSize,
  type FluxPipeline, type FluxPromptEmbeds, type FluxGenerateOptions, type FluxGenerateResult,
} from "./flux/pipeline.js";
export {
  SD3Denoiser, FluxDenoiser, FLOW_LORA_TARGETS, injectFlowLora, packFlowConditioning, unpackFlowConditioning, flowImplicitAccuracy,
  flowValidationSampler, type FlowValidationOptions,
} from "./flow-dpo.js";
export { sd3Checkpointed, fluxCheckpointed } from "./flow-checkpoint.js";
export { flowFamilyOf, loadFlowPipeline, disposeFlowPipeline, generateFlowImages, type FlowFamily, type FlowPipeline, type FlowGenerateOptions } from "./flow-generate.js";
