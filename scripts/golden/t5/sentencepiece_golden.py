#!/usr/bin/env python3
# Golden SentencePiece encodings for test/models/t5-tokenizer.test.ts, made with the REAL
# sentencepiece library (Debian bookworm's python3-sentencepiece 0.1.97, the version that trained
# and encoded the reference pipelines' spiece.model):
#
#   apt-get install python3-sentencepiece
#   /usr/bin/python3 scripts/golden/t5/sentencepiece_golden.py
#
# Encodes every PartiPrompts prompt (1,632: 3/4 of them were not in the model's training text)
# and hand-picked strings that exercise the nmt_nfkc charsmap, whitespace rules and unknown
# characters, with the sd3-pipeline's tokenizer_3/spiece.model. Writes
# test/golden/models/t5_sentencepiece.json: [{text, pieces, ids}] and the model's sha256.
import hashlib, json, os, sys
import sentencepiece as spm

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
model = os.path.join(root, "..", "shared", "data", "reference-models", "sd3-pipeline", "pipeline", "tokenizer_3", "spiece.model")
prompts_path = os.path.join(root, "..", "shared", "data", "prompts", "PartiPrompts.tsv")
out = os.path.join(root, "test", "golden", "models", "t5_sentencepiece.json")

sp = spm.SentencePieceProcessor(model_file=model)
with open(prompts_path, encoding="utf-8") as f:
    lines = f.read().split("\n")[1:]
prompts = [l.split("\t")[0] for l in lines if l.strip() != ""]
extra = [
    "", " ", "   leading and trailing   ", "double  space", "tab\there", "new\nline", "A\u3000wide\u3000space",
    "\ufb01ne \ufb02ower", "\uff21\uff22\uff23 full width", "\u2460\u2461\u2462 circled", "caf\u00e9 na\u00efve", "cafe\u0301 combining",
    "\u00bd \u2153 fractions", "x\u00b2 + y\u00b3", "\u2122 \u00a9 \u00ae", "\u201cquotes\u201d \u2018single\u2019 \u2014 dash \u2026",
    "\u4e2d\u6587 \u65e5\u672c\u8a9e", "emoji \U0001F600\U0001F34E", "zero\u200bwidth", "soft\u00adhyphen", "ctrl\u0007bell",
    "\u212b \u2126 letterlike", "\uff71\uff72 halfwidth kana", "\u0391\u03b8\u03b7\u03bd\u03b1 greek", "\u0410\u043d\u043d\u0430 cyrillic",
    "ALL CAPS SHOUTING!!!", "numbers 1234567890 and 3.14159", "under_score and hy-phen", "<extra_id_0> literal",
]
cases = []
for text in prompts + extra:
    pieces = sp.encode(text, out_type=str)
    ids = sp.encode(text)
    cases.append({"text": text, "pieces": pieces, "ids": ids})
with open(model, "rb") as f:
    sha = hashlib.sha256(f.read()).hexdigest()
with open(out, "w", encoding="utf-8") as f:
    # one case per line, compact
    head = json.dumps({"sentencepiece": spm.__version__, "model_sha256": sha}, ensure_ascii=False)[:-1]
    body = ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases)
    f.write(f'{head}, "cases": [\n{body}\n]}}\n')
print(f"wrote {len(cases)} cases to {out}", file=sys.stderr)
