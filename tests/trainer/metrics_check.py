"""metrics_check.py DIR STEPS: a run's metrics.jsonl and its TensorBoard events, read with the
real `tensorboard` package (which checks every record's masked CRC32C), agree: one training
record per step 1..STEPS (a resume dropped and rewrote the steps after its checkpoint), every
scalar equal to the JSONL value in float32, the expert-load histogram holding every expert of
every MoE layer with the JSONL's total."""
import json
import math
import sys

from tensorboard.backend.event_processing import event_accumulator

run, steps = sys.argv[1], int(sys.argv[2])
records = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
train = [r for r in records if "loss" in r]
assert [r["step"] for r in train] == list(range(1, steps + 1)), [r["step"] for r in train]
for r in train:
    for key in ("lr", "grad_norm", "tokens_per_s", "mfu", "dropped", "skipped", "expert_loads", "bytes", "elapsed_s"):
        assert key in r, (key, r)
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1, r
assert any("val_loss" in r for r in records)

acc = event_accumulator.EventAccumulator(f"{run}/tb", size_guidance={"scalars": 0, "histograms": 0})
acc.Reload()
tags = acc.Tags()
assert "loss" in tags["scalars"] and "expert_loads" in tags["histograms"], tags
by_step = {}
for e in acc.Scalars("loss"):
    by_step[e.step] = e.value  # a resumed run's steps replace the first launch's
for r in train:
    assert math.isclose(by_step[r["step"]], r["loss"], rel_tol=1e-6), (r["step"], by_step[r["step"]], r["loss"])
kinds = [k for k in train[-1]["bytes"]]
for k in kinds:
    assert f"bytes/{k}" in tags["scalars"], (k, tags["scalars"])
histos = {h.step: h.histogram_value for h in acc.Histograms("expert_loads")}
for r in train:
    loads = [x for layer in r["expert_loads"] for x in layer]
    h = histos[r["step"]]
    assert h.num == len(loads) and math.isclose(h.sum, sum(loads)), (r["step"], h.num, h.sum, len(loads), sum(loads))
    assert h.min == min(loads) and h.max == max(loads)
    assert sum(h.bucket) == len(loads)
print(f"ok: {len(train)} steps, {len(tags['scalars'])} scalar series, {len(histos)} histograms")
