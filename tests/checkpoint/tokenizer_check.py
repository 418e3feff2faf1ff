#!/usr/bin/env python3
"""`moe export`'s tokenizer loads in transformers and gives sentencepiece's own token ids.

Usage: deps/hf-venv/bin/python tests/checkpoint/tokenizer_check.py EXPORT_DIR TOKENIZER_MODEL

AutoTokenizer.from_pretrained(EXPORT_DIR), slow (LlamaTokenizer) and fast (its conversion to
tokenizers), must encode every test text to the ids the sentencepiece library gives with
TOKENIZER_MODEL (what moe data prepare tokenized the corpus with), and decode them back.
"""
import sys

import sentencepiece as spm
from transformers import AutoTokenizer

TEXTS = ["Hello, world!", "  two leading spaces and\ttabs\tinside", "Ünïcödé: naïve café — 日本語 🙂",
         "line one\nline two\n\nlast", "x" * 50 + " numbers 3.14159 and 42", ""]


def main():
    export, model = sys.argv[1], sys.argv[2]
    sp = spm.SentencePieceProcessor(model_file=model)
    fails = 0
    for fast in (False, True):
        tok = AutoTokenizer.from_pretrained(export, use_fast=fast)
        for text in TEXTS:
            want, got = sp.encode(text), tok.encode(text, add_special_tokens=False)
            if got != want:
                fails += 1
                print(f"{'fast' if fast else 'slow'} {type(tok).__name__}: {text!r}: {got} != sentencepiece's {want}")
    print(f"tokenizer_check: {2 * len(TEXTS) - fails} of {2 * len(TEXTS)} texts encode as sentencepiece does")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
