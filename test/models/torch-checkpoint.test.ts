// readTorchCheckpoint against a torch.save file written by PyTorch 1.13
// (test/golden/models/torch-checkpoint/make_golden.py, expected.json beside it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTorchCheckpoint } from "../../src/models/clip/torch-checkpoint.js";

const dir = new URL("../golden/models/torch-checkpoint/", import.meta.url).pathname;
const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as {
  tensors: Record<string, { dtype: string; shape: number[]; values: number[] }>;
};
const DTYPE: Record<string, string> = { float32: "f32", float16: "f16", bfloat16: "bf16", int64: "i64", bool: "bool" };

test("torch.save checkpoint: state_dict tensors with their dtypes, shapes and values (views, offsets, shared storage)", () => {
  const ckpt = readTorchCheckpoint(join(dir, "checkpoint.pt"));
  try {
    assert.deepEqual([...ckpt.tensors.keys()], Object.keys(expected.tensors));
    assert.deepEqual(ckpt.otherKeys.sort(), ["epoch", "lr", "name", "state_dict"]);
    for (const [name, e] of Object.entries(expected.tensors)) {
      const t = ckpt.tensors.get(name)!;
      assert.equal(t.dtype, DTYPE[e.dtype], `${name} dtype`);
      assert.deepEqual(t.shape, e.shape, `${name} shape`);
      const ours = e.dtype === "bool" ? t.to("i64").toArray() : t.to("f64").toArray();
      // exact: the same bytes, widened to float64 on both sides
      assert.deepEqual(ours, e.values, `${name} values`);
    }
  } finally {
    for (const t of ckpt.tensors.values()) t.dispose();
  }
});

test("torch checkpoints: a non-zip file is refused with what to do", () => {
  const tmp = mkdtempSync(join(tmpdir(), "ddpo-pt-"));
  try {
    const legacy = join(tmp, "legacy.pt");
    writeFileSync(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]));
    assert.throws(() => readTorchCheckpoint(legacy), /legacy\.pt: not a zip-format PyTorch checkpoint \(torch\.save of torch ≥ 1\.6\)/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
