"""moe generate's greedy tokens and moe eval's multiple-choice log-likelihoods against
transformers on the exported model (the class its config.json names) and the exported
tokenizer read by the sentencepiece package. Usage: hf_generate_check.py HF_DIR PROMPTS
GENERATED.jsonl CHOICES.jsonl CHOICES.json [PEFT_ADAPTER_DIR]; with an adapter directory
(moe export --lora peft), the model is HF PEFT's PeftModel over HF_DIR's base."""
import json
import sys

import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM

hf_dir, prompts_path, generated_path, choices_path, scored_path = sys.argv[1:6]
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
if len(sys.argv) > 6:
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, sys.argv[6]).eval()
    adapted = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    print(f"PEFT adapter {sys.argv[6]}: {adapted} adapted modules")
    assert adapted > 0
sp = spm.SentencePieceProcessor(model_file=f"{hf_dir}/tokenizer.model")
EOS = 1
failures = 0

prompts = [l.rstrip("\n") for l in open(prompts_path) if l.strip()]
generated = [json.loads(l) for l in open(generated_path)]
assert len(prompts) == len(generated), (len(prompts), len(generated))
for prompt, ours in zip(prompts, generated):
    ids = sp.encode(prompt)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=EOS,
                             pad_token_id=EOS)
    theirs = out[0, len(ids):].tolist()
    if EOS in theirs:
        theirs = theirs[:theirs.index(EOS)]
    ok = theirs == ours["completion_ids"]
    failures += not ok
    print(f"{'ok ' if ok else 'BAD'} {prompt!r}: moe {ours['completion_ids']} transformers {theirs}")

scored = json.loads(open(scored_path).read())["multiple_choice"]["log_likelihoods"]
questions = [json.loads(l) for l in open(choices_path) if l.strip()]
for q, ours in zip(questions, scored):
    context_ids = sp.encode(q["context"])
    for choice, ll in zip(q["choices"], ours):
        whole = sp.encode(q["context"] + choice)
        first = min(len(context_ids), len(whole) - 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0].double(), dim=-1)
        theirs = sum(logp[t, whole[t + 1]].item() for t in range(len(whole) - 1) if t + 1 >= first)
        ok = abs(theirs - ll) <= 1e-4 * max(1.0, abs(theirs))
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} {q['context']!r} + {choice!r}: moe {ll:.6f} transformers {theirs:.6f}")
sys.exit(1 if failures else 0)
