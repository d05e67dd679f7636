#!/usr/bin/python3
"""Golden CLIP token ids for test/models/tokenizer.test.ts.

An independent Python implementation of openai/CLIP's `simple_tokenizer.py` byte-level BPE, with
the text cleaning that transformers' `CLIPTokenizer` applies when ftfy is not installed
(`BasicTokenizer(strip_accents=False, do_split_on_punc=False)`): drop NUL, U+FFFD and control
characters (category C*, except tab/newline/CR), map whitespace (space, tab, newline, CR, Zs) to a
space, put spaces around CJK ideographs, NFC-normalize, split on whitespace, lowercase.

Debian has neither `transformers` nor the `regex` module, and Python's `re` has no \\p{L}, so the
pre-tokenization pattern
    <\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
is evaluated by a hand-written scanner over `unicodedata.category` that tries the alternatives in
the same order at each position (letters: category L*, numbers: N*, whitespace: str.isspace).

Run with Debian's python:  /usr/bin/python3 scripts/golden/tokenizer/make_golden.py
Writes test/golden/tokenizer/clip_golden.json.
"""
import gzip
import json
import os
import unicodedata

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
BPE_PATH = "/work/shared/data/tokenizer/bpe_simple_vocab_16e6.txt.gz"
if not os.path.exists(BPE_PATH):
    BPE_PATH = os.path.join(ROOT, "assets", "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
OUT = os.path.join(ROOT, "test", "golden", "tokenizer", "clip_golden.json")


def byte_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # keep the order CLIP uses for the first 256 vocabulary entries: printable bytes, then the rest
    order = printable + [b for b in range(256) if b not in printable]
    return table, order


BYTE_CHAR, BYTE_ORDER = byte_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}

lines = gzip.open(BPE_PATH).read().decode("utf-8").split("\n")
MERGES = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
assert len(MERGES) == 48894
VOCAB = [BYTE_CHAR[b] for b in BYTE_ORDER]
VOCAB += [v + "</w>" for v in VOCAB]
VOCAB += ["".join(m) for m in MERGES]
VOCAB += ["<|startoftext|>", "<|endoftext|>"]
ENCODER = {tok: i for i, tok in enumerate(VOCAB)}
DECODER = {i: tok for tok, i in ENCODER.items()}
RANK = {m: i for i, m in enumerate(MERGES)}
BOS, EOS = ENCODER["<|startoftext|>"], ENCODER["<|endoftext|>"]
SPECIAL = ("<|startoftext|>", "<|endoftext|>")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def clean(text):
    out = []
    for ch in text:
        cp = ord(ch)
        cat = unicodedata.category(ch)
        if ch in " \t\n\r" or cat == "Zs":
            out.append(" ")
        elif cp == 0 or cp == 0xFFFD or cat.startswith("C"):
            continue
        elif is_cjk(cp):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFC", "".join(out))
    return " ".join(word.lower() for word in text.split())


def is_letter(ch):
    return unicodedata.category(ch).startswith("L")


def is_number(ch):
    return unicodedata.category(ch).startswith("N")


def pre_tokenize(text):
    pieces = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        hit = next((s for s in SPECIAL + CONTRACTIONS if text.startswith(s, i)), None)
        if hit is not None:
            pieces.append(hit)
            i += len(hit)
        elif is_letter(ch):
            j = i
            while j < n and is_letter(text[j]):
                j += 1
            pieces.append(text[i:j])
            i = j
        elif is_number(ch):
            pieces.append(ch)
            i += 1
        elif not ch.isspace():
            j = i
            while j < n and not text[j].isspace() and not is_letter(text[j]) and not is_number(text[j]):
                j += 1
            pieces.append(text[i:j])
            i = j
        else:
            i += 1
    return pieces


def bpe(piece):
    if piece in SPECIAL:
        return [piece]
    symbols = [BYTE_CHAR[b] for b in piece.encode("utf-8")]
    symbols[-1] += "</w>"
    while len(symbols) > 1:
        best = None
        for k in range(len(symbols) - 1):
            r = RANK.get((symbols[k], symbols[k + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, symbols[k], symbols[k + 1])
        if best is None:
            break
        _, a, b = best
        merged = []
        k = 0
        while k < len(symbols):
            if k < len(symbols) - 1 and symbols[k] == a and symbols[k + 1] == b:
                merged.append(a + b)
                k += 2
            else:
                merged.append(symbols[k])
                k += 1
        symbols = merged
    return symbols


def tokens(text):
    return [tok for piece in pre_tokenize(clean(text)) for tok in bpe(piece)]


def encode(text):
    return [BOS] + [ENCODER[t] for t in tokens(text)] + [EOS]


def batch(text, max_length=77, pad=EOS):
    ids = encode(text)
    if len(ids) > max_length:
        ids = ids[: max_length - 1] + [EOS]
    mask = [1] * len(ids) + [0] * (max_length - len(ids))
    return ids + [pad] * (max_length - len(ids)), mask


def decode(ids):
    # transformers' convert_tokens_to_string: bytes of every symbol, UTF-8 with replacement, then
    # each end-of-word marker becomes a space.
    text = "".join(DECODER[i] for i in ids if i not in (BOS, EOS))
    raw = bytearray(CHAR_BYTE[c] for c in text)
    return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()


TEXTS = [
    "Hi there",
    "a photo of an astronaut riding a horse on mars",
    "A Photo Of A CAT, highly detailed, 8k, trending on ArtStation!!!",
    "don't stop believin' \u2014 I'm sure they'll've said it's fine, we'd go",
    "It's 3.14159 o'clock; 1,000,000 dollars (approx.)",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "Stra\u00dfe \u0152uvre \u01c5emal",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u306e\u591c\u666f",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03a3\u039f\u03a6\u039f\u03a3",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\U0001f431\u200d\U0001f464 ninja cat \U0001f44d\U0001f3fd thumbs \u2764\ufe0f heart \U0001f1ef\U0001f1f5",
    "   lots   of\t\twhitespace\n\nand newlines   ",
    "",
    "!!!???...,,,",
    "<|startoftext|>hello<|endoftext|>",
    "HELLO <|ENDOFTEXT|> world",
    "user@example.com http://x.y/z?a=1&b=2",
    "snake_case_word and kebab-case-word",
    "x\u00b2+y\u00b3=z\u00b9 \u00bd \u2153 \u216b",
    "\u0661\u0662\u0663 \u0664\u0665\u0666",
    "zero\u200bwidth\u200cjoin",
    "control\x00chars\x07here\ufffd",
    "e\u0301 vs \u00e9",
    "\ufb01 ligature \ufb00",
    "\u0130stanbul",
    "masterpiece, best quality, (ultra-detailed:1.2), [bad hands], {cinematic}",
    "123456789 0.5 -42",
    "'s 's's 'ss' ''",
    "Tab\tsep\u00a0nbsp\u3000ideographic space",
    "mixed\U0001f600emoji\U0001f600inside",
    "line\u2028separator\u2029para",
    "A majestic lion standing on a cliff at sunset, golden hour lighting, volumetric fog, "
    "ultra realistic, 8k resolution, cinematic composition, depth of field, bokeh, "
    "award winning photograph by a famous wildlife photographer, National Geographic style, "
    "sharp focus, intricate details of the mane, dramatic sky with orange and purple clouds, "
    "highly detailed fur texture, rim light, wind blowing through the grass, distant mountains, "
    "soft shadows, professional color grading",
    "a " * 100,
]

cases = []
for text in TEXTS:
    ids = encode(text)
    padded, mask = batch(text)
    padded0, _ = batch(text, pad=ENCODER["!"])
    cases.append({
        "text": text,
        "tokens": tokens(text),
        "ids": ids,
        "batch77": padded,
        "mask77": mask,
        "batch77_pad0": padded0,
        "decoded": decode(ids),
    })

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w", encoding="utf-8") as f:
    json.dump({"source": "scripts/golden/tokenizer/make_golden.py", "vocab_size": len(VOCAB),
               "bang_id": ENCODER["!"], "cases": cases}, f, ensure_ascii=False, indent=1)
print("wrote", OUT, len(cases), "cases; 'Hi there' ->", encode("Hi there"))
