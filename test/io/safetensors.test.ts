import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  SafetensorsFile,
  f8e4m3Value,
  readSafetensors,
  readSafetensorsSync,
  writeSafetensors,
  writeSafetensorsSync,
  type RawTensor,
} from "../../src/io/safetensors.js";
import { fromBytes, tensor, toBytes } from "../../src/tensor/ops.js";
import { Tensor } from "../../src/tensor/tensor.js";

// Copies of /work/shared/data/safetensors (files from the safetensors project's test data), kept in
// the repository so the test runs anywhere.
const SHARED = new URL("./fixtures/", import.meta.url).pathname;
const GOLDEN = new URL("../golden/io/", import.meta.url).pathname;

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "st-test-"));
}

/** Builds a file by hand (independent of our writer): length, JSON text, data. */
function handmade(path: string, header: unknown, data: Uint8Array, opts: { headerText?: string } = {}): void {
  const json = Buffer.from(opts.headerText ?? JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, data]));
}

function headerOf(bytes: Uint8Array): { n: number; text: string } {
  const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
  return { n, text: Buffer.from(bytes.subarray(8, 8 + n)).toString("utf8") };
}

// ---- the shared files (from the safetensors test suite: np.arange(-3, 3) in every dtype) --------

const SHARED_FILES: Record<string, { dtype: string; bits: number; unsigned: boolean }> = {
  B: { dtype: "U8", bits: 8, unsigned: true },
  H: { dtype: "U16", bits: 16, unsigned: true },
  I: { dtype: "U32", bits: 32, unsigned: true },
  b: { dtype: "I8", bits: 8, unsigned: false },
  h: { dtype: "I16", bits: 16, unsigned: false },
  i: { dtype: "I32", bits: 32, unsigned: false },
  e: { dtype: "F16", bits: 16, unsigned: false },
  f: { dtype: "F32", bits: 32, unsigned: false },
  d: { dtype: "F64", bits: 64, unsigned: false },
};

function expectedShared(name: string): number[] {
  const spec = SHARED_FILES[name]!;
  // -3..2, wrapped modulo 2^bits for unsigned types (numpy's astype of negative values).
  return [-3, -2, -1, 0, 1, 2].map((v) => (spec.unsigned && v < 0 ? v + 2 ** spec.bits : v));
}

test("reads every shared single-tensor file with exact values and metadata", () => {
  for (const name of Object.keys(SHARED_FILES)) {
    const path = join(SHARED, `${name}.safetensors`);
    const { tensors, metadata } = readSafetensorsSync(path);
    assert.deepEqual(metadata, { test: "a" });
    assert.deepEqual([...tensors.keys()], [name]);
    const t = tensors.get(name)!;
    assert.deepEqual(t.shape, [6]);
    assert.deepEqual(t.toArray(), expectedShared(name), `values of ${name}`);
    const file = SafetensorsFile.open(path);
    assert.equal(file.info(name).dtype, SHARED_FILES[name]!.dtype);
    file.close();
  }
});

test("overall.safetensors holds all nine tensors, byte-identical to the single files", async () => {
  const file = SafetensorsFile.open(join(SHARED, "overall.safetensors"));
  assert.deepEqual(file.metadata, { test: "a" });
  assert.deepEqual(file.keys().sort(), Object.keys(SHARED_FILES).sort());
  for (const name of file.keys()) {
    const single = SafetensorsFile.open(join(SHARED, `${name}.safetensors`));
    assert.deepEqual(file.readRaw(name), single.readRaw(name));
    single.close();
    assert.deepEqual(file.read(name).toArray(), expectedShared(name));
  }
  file.close();
  const { tensors } = await readSafetensors(join(SHARED, "overall.safetensors"));
  assert.equal(tensors.size, 9);
  assert.equal(tensors.get("H")!.dtype, "i32"); // U16 widens losslessly
  assert.equal(tensors.get("I")!.dtype, "i64"); // U32 widens losslessly
});

test("our writer reproduces each shared single-tensor file except for the 8-byte header padding", () => {
  // The shared files come from an older safetensors that did not pad the header; the JSON text and
  // the data must match byte for byte, and our header length must be the next multiple of 8.
  const dir = tmp();
  try {
    for (const name of Object.keys(SHARED_FILES)) {
      const original = readFileSync(join(SHARED, `${name}.safetensors`));
      const file = SafetensorsFile.open(join(SHARED, `${name}.safetensors`));
      const out = join(dir, `${name}.safetensors`);
      writeSafetensorsSync(out, { [name]: file.readRaw(name) }, { test: "a" });
      const ours = readFileSync(out);
      const a = headerOf(original);
      const b = headerOf(ours);
      assert.equal(b.n % 8, 0);
      assert.equal(b.n, Math.ceil(a.n / 8) * 8);
      assert.equal(b.text.trimEnd(), a.text);
      assert.deepEqual(ours.subarray(8 + b.n), original.subarray(8 + a.n));
      // Tensors loaded from the file (not raw bytes) also reproduce the data, for the dtypes we hold natively.
      if (!SHARED_FILES[name]!.unsigned || name === "B") {
        writeSafetensorsSync(out, { [name]: file.read(name) }, { test: "a" });
        assert.deepEqual(readFileSync(out), ours);
      }
      file.close();
    }
    // overall: the reference sorts by descending dtype alignment then name, the shared file by name.
    const overall = SafetensorsFile.open(join(SHARED, "overall.safetensors"));
    const raws = new Map(overall.keys().map((k) => [k, overall.readRaw(k)]));
    writeSafetensorsSync(join(dir, "overall.safetensors"), raws, { test: "a" });
    const again = SafetensorsFile.open(join(dir, "overall.safetensors"));
    assert.deepEqual(again.keys(), ["d", "f", "I", "i", "e", "H", "h", "b", "B"]);
    for (const k of overall.keys()) assert.deepEqual(again.readRaw(k), overall.readRaw(k));
    overall.close();
    again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- reference serializer byte vectors (huggingface/safetensors, safetensors/src/tensor.rs tests) ----

function asciiBytes(s: string): number[] {
  return [...Buffer.from(s)];
}

test("matches the reference serializer's byte-exact test vectors", () => {
  const dir = tmp();
  try {
    const f32 = (shape: number[]) => tensor([0, 1, 2, 3, 4, 5], shape);
    const dataBytes = [...toBytes(f32([6]))];
    // test_serialization: {"attn.0": F32 [1,2,3]} — 64-byte header already aligned.
    writeSafetensorsSync(join(dir, "a.safetensors"), { "attn.0": f32([1, 2, 3]) });
    const json1 = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    assert.deepEqual([...readFileSync(join(dir, "a.safetensors"))], [64, 0, 0, 0, 0, 0, 0, 0, ...asciiBytes(json1), ...dataBytes]);
    // test_serialization_forced_alignement: "attn0", shape [1,1,2,3] → 65 bytes of JSON padded to 72.
    writeSafetensorsSync(join(dir, "b.safetensors"), { attn0: f32([1, 1, 2, 3]) });
    const json2 = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
    assert.equal(json2.length, 65);
    assert.deepEqual([...readFileSync(join(dir, "b.safetensors"))], [72, 0, 0, 0, 0, 0, 0, 0, ...asciiBytes(json2), 32, 32, 32, 32, 32, 32, 32, ...dataBytes]);
    // test_empty: no tensors → "{}" + 6 spaces; with metadata {"framework":"pt"} → 35 bytes + 5 spaces.
    writeSafetensorsSync(join(dir, "c.safetensors"), {});
    assert.deepEqual([...readFileSync(join(dir, "c.safetensors"))], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    writeSafetensorsSync(join(dir, "d.safetensors"), {}, { framework: "pt" });
    assert.deepEqual(
      [...readFileSync(join(dir, "d.safetensors"))],
      [40, 0, 0, 0, 0, 0, 0, 0, ...asciiBytes('{"__metadata__":{"framework":"pt"}}'), 32, 32, 32, 32, 32],
    );
    assert.equal(readSafetensorsSync(join(dir, "c.safetensors")).tensors.size, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- a file written by PyTorch (scripts/golden/io/make_safetensors.py) ------------------------

interface GoldenTensor {
  dtype: string;
  shape: number[];
  values: number[];
  bits?: number[];
}

test("reads the PyTorch-written golden file: f64/f32 values, f16/bf16 bits, ints, bool, empty", () => {
  const golden = JSON.parse(readFileSync(join(GOLDEN, "torch_written.json"), "utf8")) as {
    metadata: Record<string, string>;
    tensors: Record<string, GoldenTensor>;
  };
  const { tensors, metadata } = readSafetensorsSync(join(GOLDEN, "torch_written.safetensors"));
  assert.deepEqual(metadata, golden.metadata);
  assert.deepEqual([...tensors.keys()].sort(), Object.keys(golden.tensors).sort());
  for (const [name, g] of Object.entries(golden.tensors)) {
    const t = tensors.get(name)!;
    assert.deepEqual(t.shape, g.shape, name);
    if (g.bits !== undefined) {
      assert.deepEqual([...(t.data() as Uint16Array)], g.bits, `${name} bits`);
      // and the decoded values agree with torch's decoding
      assert.deepEqual(t.toArray(), g.values, `${name} values`);
    } else if (g.dtype === "I64") {
      assert.deepEqual([...(t.data() as BigInt64Array)], g.values.map((v) => BigInt(v)), name);
    } else if (g.dtype === "BOOL") {
      assert.equal(t.dtype, "bool");
      assert.deepEqual(t.toArray(), g.values.map((v) => (v ? 1 : 0)), name);
    } else {
      assert.deepEqual(t.toArray(), g.values, name);
    }
  }
});

// ---- round trips -------------------------------------------------------------------------------

function bitsTensor(bits: number[], dtype: "f16" | "bf16"): Tensor {
  return fromBytes(new Uint8Array(new Uint16Array(bits).buffer), [bits.length], dtype);
}

test("round-trips every dtype bit-exactly, with metadata, sync and async", async () => {
  const dir = tmp();
  try {
    const special16 = [0x0000, 0x8000, 0x0001, 0x03ff, 0x3c00, 0x7bff, 0x7c00, 0xfc00, 0x7e01, 0xc000];
    const tensors = new Map<string, Tensor>([
      ["f64", tensor(new Float64Array([Math.PI, -0, 5e-324, Number.MAX_VALUE, -Infinity, NaN]), [2, 3])],
      ["f32", tensor(new Float32Array([1.5, -2.25, 1e-45, 3.4e38, Infinity, NaN]), [3, 2])],
      ["f16", bitsTensor(special16, "f16")],
      ["bf16", bitsTensor(special16, "bf16")],
      ["i64", tensor(new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n]))],
      ["i32", tensor(new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, 1]), [2, 2])],
      ["i16", tensor(new Int16Array([-32768, 32767, 0]))],
      ["i8", tensor(new Int8Array([-128, 127, 0]))],
      ["u8", tensor(new Uint8Array([0, 255, 128]))],
      ["bool", fromBytes(new Uint8Array([1, 0, 1, 1]), [2, 2], "bool")],
      ["scalar", tensor([7], [])],
      ["zero-size", tensor([], [2, 0, 3])],
    ]);
    const metadata = { format: "pt", note: "ünïcode \"quoted\" \n newline", "0": "integer-like key" };
    writeSafetensorsSync(join(dir, "sync.safetensors"), tensors, metadata);
    await writeSafetensors(join(dir, "async.safetensors"), tensors, metadata);
    assert.deepEqual(readFileSync(join(dir, "sync.safetensors")), readFileSync(join(dir, "async.safetensors")));
    for (const [back, meta] of [
      [readSafetensorsSync(join(dir, "sync.safetensors")).tensors, readSafetensorsSync(join(dir, "sync.safetensors")).metadata],
      [(await readSafetensors(join(dir, "async.safetensors"))).tensors, (await readSafetensors(join(dir, "async.safetensors"))).metadata],
    ] as const) {
      assert.deepEqual(meta, metadata);
      assert.equal(back.size, tensors.size);
      for (const [name, t] of tensors) {
        const b = back.get(name)!;
        assert.equal(b.dtype, t.dtype, name);
        assert.deepEqual(b.shape, t.shape, name);
        assert.deepEqual(toBytes(b), toBytes(t), name);
      }
    }
    // header is aligned so every tensor starts at a multiple of 8 in the file
    const file = SafetensorsFile.open(join(dir, "sync.safetensors"));
    assert.equal(file.dataStart % 8, 0);
    // layout: descending dtype alignment, then name
    assert.deepEqual(file.keys(), ["i64", "f64", "f32", "scalar", "zero-size", "i32", "bf16", "f16", "i16", "i8", "u8", "bool"]);
    file.close();
    // no temporary files left behind; writing over an existing file replaces it
    writeSafetensorsSync(join(dir, "sync.safetensors"), { only: tensor([1, 2]) });
    assert.deepEqual(SafetensorsFile.open(join(dir, "sync.safetensors")).keys(), ["only"]);
    assert.deepEqual(readdirSync(dir).sort(), ["async.safetensors", "sync.safetensors"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("dtypes libtorch lacks: U16/U32/U64 widen losslessly, FP8 decodes to f16, raw bytes round-trip", () => {
  const dir = tmp();
  try {
    const u16: RawTensor = { dtype: "U16", shape: [3], bytes: new Uint8Array(new Uint16Array([0, 65535, 40000]).buffer) };
    const u32: RawTensor = { dtype: "U32", shape: [2], bytes: new Uint8Array(new Uint32Array([4294967295, 3000000000]).buffer) };
    const u64: RawTensor = { dtype: "U64", shape: [2], bytes: new Uint8Array(new BigUint64Array([2n ** 63n - 1n, 5n]).buffer) };
    const u64big: RawTensor = { dtype: "U64", shape: [2], bytes: new Uint8Array(new BigUint64Array([1n, 2n ** 63n]).buffer) };
    const allCodes = new Uint8Array(256).map((_, i) => i);
    const e4m3: RawTensor = { dtype: "F8_E4M3", shape: [256], bytes: allCodes };
    const e5m2: RawTensor = { dtype: "F8_E5M2", shape: [256], bytes: allCodes };
    const path = join(dir, "raw.safetensors");
    writeSafetensorsSync(path, { u16, u32, u64, u64big, e4m3, e5m2 });
    const file = SafetensorsFile.open(path);
    for (const [name, raw] of Object.entries({ u16, u32, u64, u64big, e4m3, e5m2 })) assert.deepEqual(file.readRaw(name), raw);
    assert.equal(file.read("u16").dtype, "i32");
    assert.deepEqual(file.read("u16").toArray(), [0, 65535, 40000]);
    assert.equal(file.read("u32").dtype, "i64");
    assert.deepEqual([...(file.read("u32").data() as BigInt64Array)], [4294967295n, 3000000000n]);
    assert.deepEqual([...(file.read("u64").data() as BigInt64Array)], [2n ** 63n - 1n, 5n]);
    assert.throws(() => file.read("u64big"), /raw\.safetensors: tensor "u64big": U64 element 1 is ≥ 2\^63/);
    // FP8 E5M2 is the top byte of an f16 (OCP FP8 spec), so its f16 bits are code << 8.
    const e5 = file.read("e5m2");
    assert.equal(e5.dtype, "f16");
    assert.deepEqual([...(e5.data() as Uint16Array)], [...allCodes].map((c) => c << 8));
    // FP8 E4M3 (fn): spec values — max 448 (0x7e), min subnormal 2^-9 (0x01), min normal 2^-6 (0x08),
    // 1.0 (0x38), -1.0 (0xb8), NaN only at S.1111.111, no infinities.
    const e4 = file.read("e4m3").toArray();
    assert.equal(e4[0x7e], 448);
    assert.equal(e4[0xfe], -448);
    assert.equal(e4[0x01], 2 ** -9);
    assert.equal(e4[0x07], 7 * 2 ** -9);
    assert.equal(e4[0x08], 2 ** -6);
    assert.equal(e4[0x38], 1);
    assert.equal(e4[0xb8], -1);
    assert.equal(e4[0x39], 1.125);
    assert.ok(Number.isNaN(e4[0x7f]!) && Number.isNaN(e4[0xff]!));
    assert.equal(e4.filter((v) => Number.isNaN(v)).length, 2);
    assert.equal(e4.filter((v) => !Number.isFinite(v) && !Number.isNaN(v)).length, 0);
    // the f16 decoding equals the closed-form value for every code
    for (let c = 0; c < 256; c++) if (!Number.isNaN(f8e4m3Value(c))) assert.equal(e4[c], f8e4m3Value(c), `code ${c}`);
    file.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("reads one small tensor past 2^31 bytes of a sparse file without loading the rest", () => {
  const dir = tmp();
  try {
    const path = join(dir, "big.safetensors");
    const bigCount = 2 ** 29 + 2; // f32 → 2^31 + 8 bytes
    const bigBytes = bigCount * 4;
    const header = {
      __metadata__: { note: "sparse" },
      big: { dtype: "F32", shape: [bigCount], data_offsets: [0, bigBytes] },
      tail: { dtype: "F32", shape: [4], data_offsets: [bigBytes, bigBytes + 16] },
    };
    handmade(path, header, new Uint8Array(0));
    const headerEnd = readFileSync(path).length;
    truncateSync(path, headerEnd + bigBytes + 16); // sparse: no disk blocks for the zeros
    const tailValues = new Float32Array([1.5, -2, 3.25, 1e30]);
    const fd = openSync(path, "r+");
    writeSync(fd, new Uint8Array(tailValues.buffer), 0, 16, headerEnd + bigBytes);
    closeSync(fd);
    const file = SafetensorsFile.open(path);
    assert.deepEqual(file.info("big").dataOffsets, [0, bigBytes]);
    assert.ok(file.dataStart + file.info("tail").dataOffsets[0] > 2 ** 31);
    assert.deepEqual(file.read("tail").toFloat32Array(), tailValues);
    file.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- strict validation ---------------------------------------------------------------------------

test("damaged files fail with messages naming the file, the tensor and the problem", async () => {
  const dir = tmp();
  try {
    const p = (name: string) => join(dir, name);
    const six = new Uint8Array(24);
    const ok = { x: { dtype: "F32", shape: [6], data_offsets: [0, 24] } };
    const cases: [string, () => void, RegExp][] = [
      ["tiny", () => writeFileSync(p("tiny"), new Uint8Array([1, 2, 3])), /tiny: the file has 3 bytes, fewer than the 8-byte header length/],
      [
        "longheader",
        () => {
          const b = Buffer.alloc(16);
          b.writeBigUInt64LE(1000n);
          writeFileSync(p("longheader"), b);
        },
        /longheader: the header length 1000 runs past the end of the file \(16 bytes\)/,
      ],
      [
        "hugeheader",
        () => {
          const b = Buffer.alloc(16);
          b.writeBigUInt64LE(2n ** 62n);
          writeFileSync(p("hugeheader"), b);
        },
        /hugeheader: the header length \d+ exceeds the 100000000-byte limit/,
      ],
      ["badjson", () => handmade(p("badjson"), null, six, { headerText: '{"x": {"dtype": "F32",' }), /badjson: the header is not valid JSON/],
      ["notobject", () => handmade(p("notobject"), [1, 2], six), /notobject: the header must be a JSON object/],
      [
        "baddtype",
        () => handmade(p("baddtype"), { x: { dtype: "F128", shape: [6], data_offsets: [0, 24] } }, six),
        /baddtype: tensor "x": unknown dtype "F128"/,
      ],
      [
        "mismatch",
        () => handmade(p("mismatch"), { x: { dtype: "F32", shape: [5], data_offsets: [0, 24] } }, six),
        /mismatch: tensor "x": shape \[5\] of F32 needs 20 bytes but data_offsets \[0, 24\] hold 24/,
      ],
      [
        "overlap",
        () =>
          handmade(
            p("overlap"),
            { x: { dtype: "F32", shape: [4], data_offsets: [0, 16] }, y: { dtype: "F32", shape: [4], data_offsets: [8, 24] } },
            six,
          ),
        /overlap: tensor "y": data_offsets \[8, 24\] overlap tensor "x"/,
      ],
      [
        "gap",
        () => handmade(p("gap"), { x: { dtype: "F32", shape: [4], data_offsets: [8, 24] } }, six),
        /gap: tensor "x": data_offsets begin at 8 but the previous tensor ends at 0/,
      ],
      [
        "reversed",
        () => handmade(p("reversed"), { x: { dtype: "F32", shape: [0], data_offsets: [24, 0] } }, six),
        /reversed: tensor "x": data_offsets \[24, 0\] end before they begin/,
      ],
      ["truncated", () => handmade(p("truncated"), ok, six.subarray(0, 20)), /truncated: the file is truncated: tensor "x" ends at byte \d+ but the file has \d+ bytes/],
      ["trailing", () => handmade(p("trailing"), ok, new Uint8Array(30)), /trailing: 6 bytes after the last tensor are not described by the header/],
      [
        "badmeta",
        () => handmade(p("badmeta"), { __metadata__: { epoch: 3 }, ...ok }, six),
        /badmeta: __metadata__ key "epoch" holds a number; metadata values must be strings/,
      ],
      [
        "badshape",
        () => handmade(p("badshape"), { x: { dtype: "F32", shape: [-6], data_offsets: [0, 24] } }, six),
        /badshape: tensor "x": shape must be an array of non-negative integers/,
      ],
      [
        "badbool",
        () => handmade(p("badbool"), { m: { dtype: "BOOL", shape: [2], data_offsets: [0, 2] } }, new Uint8Array([1, 7])),
        /badbool: tensor "m": BOOL element 1 holds byte 7/,
      ],
    ];
    for (const [name, make, pattern] of cases) {
      make();
      assert.throws(() => readSafetensorsSync(p(name)), pattern, name);
      await assert.rejects(readSafetensors(p(name)), pattern, name);
    }
    handmade(p("fine"), ok, six);
    const file = SafetensorsFile.open(p("fine"));
    assert.throws(() => file.info("y"), /fine: no tensor "y" \(it holds 1: x\)/);
    file.close();
    assert.throws(() => file.read("x"), /read\("x"\) after close\(\)/);
    // writer-side validation
    assert.throws(
      () => writeSafetensorsSync(p("w"), { r: { dtype: "U16", shape: [3], bytes: new Uint8Array(5) } }),
      /tensor "r": shape \[3\] of U16 needs 6 bytes, got 5/,
    );
    assert.throws(() => writeSafetensorsSync(p("w"), { __metadata__: tensor([1]) }), /"__metadata__" is reserved/);
    assert.throws(() => writeSafetensorsSync(p("w"), {}, { n: 3 as unknown as string }), /metadata "n" must be a string/);
    assert.equal(existsSync(p("w")), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
