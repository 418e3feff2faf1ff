#!/usr/bin/env python3
"""moe's tokenizer.json reader (data/hf_tokenizer.h) against Hugging Face's tokenizers library.

Usage: hf_tokenizer_check.py TOKENIZE_BINARY CORPUS_FILE WORKDIR

Trains byte-level BPE tokenizers with the library, in the layouts published models use
(GPT-2's ByteLevel regex; DeepSeek-V3's Sequence of Split regexes; Llama 3's single Split
with ignore_merges; Qwen2's NFC normalizer), each with special tokens, on CORPUS_FILE's
text; then encodes texts with Unicode (CJK, accents, combining marks, emoji), whitespace
runs, digits and special tokens inline, by the library
(encode(text, add_special_tokens=False)) and by moe (TOKENIZE_BINARY), and requires the
same ids, and moe's decoding of them to equal the library's.
"""
import json
import os
import subprocess
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL = ["<|endoftext|>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<|im_start|>"]
DEEPSEEK_V3 = [
    r"\p{N}{1,3}",
    r"[一-龥\u3040-ゟ゠-ヿ]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")


def split(pattern):
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)


def layouts():
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return {
        "gpt2": (None, pre_tokenizers.ByteLevel(add_prefix_space=False), False),
        "gpt2_prefix_space": (None, pre_tokenizers.ByteLevel(add_prefix_space=True), False),
        "deepseek_v3": (None, pre_tokenizers.Sequence([split(p) for p in DEEPSEEK_V3] + [bl]), False),
        "llama3": (None, pre_tokenizers.Sequence([split(LLAMA3), bl]), True),
        "qwen2_nfc": (normalizers.NFC(), pre_tokenizers.Sequence([split(LLAMA3), bl]), False),
        "digits": (None, pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl]), False),
    }


TEXTS = [
    "Hello, world! This is a test.",
    "naïve café résumé — ‘quotes’ and “more”",
    "你好世界，日本語のテキストとカタカナ。한국어도 있어요",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "combining e\u0301 and a\u0308 (NFC would join them)",
    "a   b\t\tc\n\n\nd  \n  e    ",
    "   leading spaces and trailing   ",
    "numbers 1234567 3.14159 0x1F 2026-12-07",
    "don't I'll we've THEY'RE it's",
    "!!!???... --- ***  ~~~",
    "hello<|endoftext|>world<｜begin▁of▁sentence｜>again<|endoftext|>",
    "<|im_start|>user\nWhat is 2+2?<|endoftext|>",
    "",
    " ",
    "\n",
    "tab\there",
]


def main():
    tokenize, corpus, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    lines = [l.rstrip("\n") for l in open(corpus, encoding="utf-8", errors="replace") if l.strip()][:5000]
    lines += TEXTS * 20  # so the Unicode in the texts has merges of its own
    texts = TEXTS + lines[:200]
    with open(f"{work}/texts.jsonl", "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    failures = 0
    for name, (norm, pre, ignore_merges) in layouts().items():
        tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
        if norm is not None:
            tok.normalizer = norm
        tok.pre_tokenizer = pre
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(lines, trainer=trainer)
        d = f"{work}/{name}"
        os.makedirs(d, exist_ok=True)
        tok.save(f"{d}/tokenizer.json")
        json.dump({"eos_token": {"content": "<|endoftext|>"}}, open(f"{d}/tokenizer_config.json", "w"))
        out = subprocess.run([tokenize, f"{d}/tokenizer.json", f"{work}/texts.jsonl"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"BAD {name}: {out.stderr.strip()}")
            failures += 1
            continue
        rows = [json.loads(l) for l in out.stdout.splitlines()]
        info = rows.pop()
        bad = 0
        for text, ours in zip(texts, rows):
            theirs = tok.encode(text, add_special_tokens=False).ids
            # Decoding as the library does (a prefix space stays, NFC's changes stay).
            round_trip = ours["decoded"] == tok.decode(theirs, skip_special_tokens=False)
            if ours["ids"] != theirs or not round_trip:
                bad += 1
                if bad <= 3:
                    print(f"BAD {name} {text!r}: moe {ours['ids']} tokenizers {theirs} decoded {ours['decoded']!r}")
        eos_ok = info["end_of_document"] == tok.token_to_id("<|endoftext|>")
        print(f"{'ok ' if not bad and eos_ok else 'BAD'} {name}: {len(texts) - bad} of {len(texts)} texts "
              f"encode alike ({sum(len(r['ids']) for r in rows)} ids), end of document id {info['end_of_document']}")
        failures += bad > 0 or not eos_ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
