// The preference store's records and options (store.ts writes and reads them; store-source.ts
// and store-export.ts read a store through StoreReader without importing the class).
import type { ReaderOptions } from "./types.js";

export type VoteChoice = "a" | "b" | "tie" | "skip";

export interface ImageInput {
  prompt: string;
  /** Encoded image bytes (PNG/JPEG/WebP) stored in the file ... */
  data?: Uint8Array;
  /** ... or the path of an image file (stored as given). */
  path?: string;
  format?: string;
  width?: number;
  height?: number;
  model?: string;
  seed?: number;
  meta?: Record<string, unknown>;
}

export interface StoredImage {
  id: number;
  promptId: number;
  data: Uint8Array | null;
  path: string | null;
  format: string | null;
  width: number | null;
  height: number | null;
  model: string | null;
  seed: number | null;
  meta: Record<string, unknown> | null;
  createdAt: string;
}

export interface StoredPair {
  id: number;
  promptId: number;
  prompt: string;
  imageA: number;
  imageB: number;
  createdAt: string;
}

export interface Vote {
  pairId: number;
  rater: string;
  choice: VoteChoice;
  createdAt: string;
}

export interface AiLabel {
  pairId: number;
  reward: string;
  scoreA: number;
  scoreB: number;
  /** Tie margin chosen when labelling (0 when none was given). */
  margin: number;
  createdAt: string;
}

export interface ResolveOptions {
  /** Which labels decide: human votes, AI labels, or human votes where any and AI otherwise (default). */
  labels?: "human" | "ai" | "human-then-ai";
  /** AI reward to use (default: the only one present; required when a pair has several). */
  reward?: string;
  /** AI labels within this margin are ties (default: the margin stored with each label, 0 when none). */
  margin?: number;
  /** Minimum number of a/b/tie votes for a human label (default 1). */
  minVotes?: number;
}

export type Resolution = { winner: "a" | "b" | "tie"; by: "human" | "ai"; votes: number } | { winner: null };

export interface StoreSourceOptions extends ResolveOptions, ReaderOptions {
  /** Pairs per loader unit (default 256): bounds how many image blobs are in memory at once. */
  unitSize?: number;
}

/** What reading a store needs: PreferenceStore implements it. */
export interface StoreReader {
  readonly path: string;
  pairIds(): number[];
  pair(id: number): StoredPair | null;
  image(id: number): StoredImage | null;
  resolve(pairId: number, opts?: ResolveOptions): Resolution;
}
