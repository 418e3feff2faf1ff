#!/usr/bin/env python3
"""Instruction data with checkable answers for configs/sft-tiny.yaml (Python's standard library only).

Three tasks on words of the fortune databases that the install brings (and on numbers):
repeat a word, name its first letter, name the number after one. Words and numbers are split
in disjoint sets, so that the held-out prompts ask about ones the fine-tuning never saw:

  OUT/train/tasks.jsonl   chat records {"messages": [user, assistant]}  (data.corpus)
  OUT/heldout.jsonl       {"prompt": ..., "answer": ...}               (exact-match evaluation)

Usage: scripts/make-sft-tasks.py OUT [--records N] [--heldout N] [--seed S] [--corpus DIR]
"""
import argparse
import json
import os
import random
import re


def words_of(corpus):
    seen = set()
    for root, _, files in sorted(os.walk(corpus)):
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.islink(path) or name.endswith(".dat"):
                continue
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "ignore")
            seen.update(re.findall(r"\b[a-z]{3,7}\b", text))
    return sorted(seen)


def task(rng, words, numbers):
    kind = rng.randrange(3)
    if kind == 0:
        w = rng.choice(words)
        return f"Repeat: {w}", w
    if kind == 1:
        w = rng.choice(words)
        return f"First letter of {w}?", w[0]
    n = rng.choice(numbers)
    return f"Number after {n}?", str(n + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--records", type=int, default=6000)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", default="/usr/share/games/fortunes")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    words = words_of(a.corpus)
    if len(words) < 100:
        raise SystemExit(f"make-sft-tasks: {a.corpus}: only {len(words)} words; give --corpus a text directory")
    rng.shuffle(words)
    cut = len(words) * 4 // 5
    train_words, heldout_words = words[:cut], words[cut:]
    train_numbers, heldout_numbers = [n for n in range(99) if n % 5], [n for n in range(99) if n % 5 == 0]
    os.makedirs(os.path.join(a.out, "train"), exist_ok=True)
    with open(os.path.join(a.out, "train", "tasks.jsonl.tmp"), "w") as f:
        for _ in range(a.records):
            prompt, answer = task(rng, train_words, train_numbers)
            f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    with open(os.path.join(a.out, "heldout.jsonl.tmp"), "w") as f:
        for _ in range(a.heldout):
            prompt, answer = task(rng, heldout_words, heldout_numbers)
            f.write(json.dumps({"prompt": prompt, "answer": answer}) + "\n")
    os.replace(os.path.join(a.out, "train", "tasks.jsonl.tmp"), os.path.join(a.out, "train", "tasks.jsonl"))
    os.replace(os.path.join(a.out, "heldout.jsonl.tmp"), os.path.join(a.out, "heldout.jsonl"))
    print(f"make-sft-tasks: {a.records} records -> {a.out}/train/tasks.jsonl, {a.heldout} held-out prompts -> "
          f"{a.out}/heldout.jsonl ({len(train_words)} / {len(heldout_words)} words)")


if __name__ == "__main__":
    main()
