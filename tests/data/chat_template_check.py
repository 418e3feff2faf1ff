#!/usr/bin/env python3
"""Jinja chat templates (data/jinja_chat.h through data/chat.h's ChatRenderer) against
transformers' apply_chat_template, the implementation users' templates are written for.

Usage: chat_template_check.py RENDER_CHAT_BINARY CORPUS_FILE WORKDIR

Trains a byte-level BPE tokenizer (DeepSeek-V3's pre-tokenizer) with the special tokens of
four template families, then for each family (ChatML as Qwen writes it, Llama 3's headers
with bos_token and trim, Mistral's [INST] with raise_exception on alternation, DeepSeek-V3's
namespace-held system prompt and <｜User｜>/<｜Assistant｜>) writes a tokenizer_config.json
with the template and renders conversations (multi-turn, Unicode, whitespace at the edges)
both ways: the text, the text with the generation prompt and its token ids must be equal;
each assistant message's content must lie in a counted span and no user or system content
may. Writes WORKDIR/<family>/ for chat_template.sh's run of moe itself.
"""
import json
import os
import shutil
import subprocess
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
           "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>", "[INST]", "[/INST]", "<｜begin▁of▁sentence｜>",
           "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
           "<pad>", "<|sep|>"]
DEEPSEEK_V3 = [
    r"\p{N}{1,3}",
    r"[一-龥\u3040-ゟ゠-ヿ]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]

FAMILIES = {
    "chatml": ("<|endoftext|>", "<|im_end|>",
               "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
               "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
               "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>",
               "{{- bos_token }}{% for message in messages %}"
               "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
               " + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "mistral": ("<s>", "</s>",
                "{{ bos_token }}{% for message in messages %}"
                "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
                "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
                "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
                "{% endfor %}"),
    # Closes the last turn with eos only when no generation prompt follows.
    "phi3": ("<s>", "</s>",
             "{% for message in messages %}{% if message['role'] == 'system' %}"
             "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
             "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
             "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"),
    # The other special tokens transformers passes (pad_token, additional_special_tokens).
    "special_tokens": ("<s>", "</s>",
                       "{{ bos_token }}{% for message in messages %}{{ message['role'] + additional_special_tokens[0] + "
                       "message['content'] + pad_token }}{% endfor %}{% if add_generation_prompt %}assistant"
                       "{{ additional_special_tokens[0] }}{% endif %}"),
    "deepseek_v3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
                    "{% set ns = namespace(system_prompt='') %}{%- for message in messages %}"
                    "{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}"
                    "{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}"
                    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
                    "{%- if message['role'] == 'assistant' %}"
                    "{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}{%- endif %}"
                    "{%- endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"),
}

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris"}, {"role": "user", "content": "And of Japan — 日本?"},
     {"role": "assistant", "content": "Tokyo (東京) 🗼"}],
    [{"role": "user", "content": "  spaces at the edges  \n"}, {"role": "assistant", "content": "\n trimmed? "}],
    [{"role": "user", "content": "naïve café"}, {"role": "assistant", "content": "résumé"},
     {"role": "user", "content": "a\tb\n\nc"}, {"role": "assistant", "content": "d  e"},
     {"role": "user", "content": "last question"}],
]


def tokenizer(corpus, work):
    lines = [l.rstrip("\n") for l in open(corpus, encoding="utf-8", errors="replace") if l.strip()][:3000]
    lines += [m["content"] for c in CONVERSATIONS for m in c] * 20
    tok = Tokenizer(models.BPE())
    split = [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in DEEPSEEK_V3]
    tok.pre_tokenizer = pre_tokenizers.Sequence(split + [pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                   use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.save(f"{work}/tokenizer.json")


def main():
    render, corpus, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    tokenizer(corpus, work)
    failures = 0
    for family, (bos, eos, template) in FAMILIES.items():
        d = f"{work}/{family}"
        os.makedirs(d, exist_ok=True)
        shutil.copy(f"{work}/tokenizer.json", f"{d}/tokenizer.json")
        config = {"bos_token": bos, "eos_token": {"content": eos}, "pad_token": "<pad>",
                  "additional_special_tokens": ["<|sep|>"]}
        if family == "chatml":  # as transformers' save_pretrained writes it: a file of its own
            open(f"{d}/chat_template.jinja", "w").write(template)
        else:
            config["chat_template"] = template
        json.dump(config, open(f"{d}/tokenizer_config.json", "w"), ensure_ascii=False)
        theirs = PreTrainedTokenizerFast(tokenizer_file=f"{d}/tokenizer.json", bos_token=bos, eos_token=eos,
                                         pad_token="<pad>", additional_special_tokens=["<|sep|>"])
        theirs.chat_template = template
        convs = [c for c in CONVERSATIONS if family != "mistral" or all(m["role"] != "system" for m in c)]
        with open(f"{d}/chats.jsonl", "w") as f:
            for c in convs:
                f.write(json.dumps({"messages": c}, ensure_ascii=False) + "\n")
        out = subprocess.run([render, "tokenizer", f"{d}/tokenizer.json", f"{d}/chats.jsonl"], capture_output=True,
                             text=True)
        if out.returncode != 0:
            print(f"BAD {family}: {out.stderr.strip()}")
            failures += 1
            continue
        bad = 0
        for conv, row in zip(convs, map(json.loads, out.stdout.splitlines())):
            text = theirs.apply_chat_template(conv, tokenize=False)
            prompt = theirs.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            ids = theirs.apply_chat_template(conv, tokenize=True)
            raw = row["text"].encode()  # (spans are byte offsets)
            spans = [raw[b:e].decode() for b, e in row["counted"]]
            answers_counted = all(any(m["content"].strip() in s for s in spans) for m in conv if m["role"] == "assistant")
            others_free = not any(m["content"].strip() and m["content"].strip() in s for s in spans
                                  for m in conv if m["role"] != "assistant")
            ok = row["text"] == text and row["prompt"] == prompt and row["ids"] == ids and answers_counted \
                and others_free
            if not ok:
                bad += 1
                print(f"BAD {family}: moe {row['text']!r} / {row['prompt']!r} spans {spans}\n"
                      f"    transformers {text!r} / {prompt!r}; ids equal {row['ids'] == ids}")
        print(f"{'ok ' if not bad else 'BAD'} {family}: {len(convs) - bad} of {len(convs)} conversations render alike "
              f"(text, generation prompt, {sum(len(json.loads(r)['ids']) for r in out.stdout.splitlines())} ids), "
              f"answers counted")
        failures += bad > 0
    # The template's own error: Mistral's alternation check, from both.
    d = f"{work}/mistral"
    with open(f"{d}/bad.jsonl", "w") as f:
        f.write(json.dumps({"messages": [{"role": "assistant", "content": "first"}]}) + "\n")
    out = subprocess.run([render, "tokenizer", f"{d}/tokenizer.json", f"{d}/bad.jsonl"], capture_output=True, text=True)
    if out.returncode == 0 or "must alternate" not in out.stderr:
        print(f"BAD mistral: an assistant first should raise the template's exception, moe said {out.stderr!r}")
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
