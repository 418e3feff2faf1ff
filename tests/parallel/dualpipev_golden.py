#!/usr/bin/env python3
"""Runs deepseek-ai/DualPipe's own DualPipeV.step() with its compute and communication stubbed
to log, printing each rank's unit order: the golden lists in tests/parallel/test_schedules.cpp
(F: forward, B: backward, I: backward with its weights left, W: them, "&" before a pair run as
one; phase.micro-batch). Not run by ctest (it needs the reference); regenerate with
  git -C DualPipe show HEAD:dualpipe/dualpipev.py > dualpipev_ref.py && python3 dualpipev_golden.py
"""
import sys, types
torch = types.ModuleType("torch"); torch.nn = types.ModuleType("torch.nn"); torch.distributed = types.ModuleType("torch.distributed")
class Module:
    def __init__(self): pass
torch.nn.Module = Module; torch.nn.ModuleList = list; torch.Tensor = object; torch.distributed.ProcessGroup = object
torch.is_grad_enabled = lambda: True; torch.stack = lambda x: x
sys.modules.update({"torch": torch, "torch.nn": torch.nn, "torch.distributed": torch.distributed})
comm = types.ModuleType("dualpipe.comm"); comm.TENSOR_SHAPES = [1]; comm.TENSOR_DTYPE = 1
utils = types.ModuleType("dualpipe.utils")
class WGS:
    enabled = False
    funcs_queue = None
    @classmethod
    def clear(cls): pass
utils.WeightGradStore = WGS; utils.run_backward = None; utils.scatter = lambda *a: None; utils.gather = None
pkg = types.ModuleType("dualpipe"); pkg.comm = comm; pkg.utils = utils
sys.modules.update({"dualpipe": pkg, "dualpipe.comm": comm, "dualpipe.utils": utils})
src = open("dualpipev_ref.py").read().replace("assert WeightGradStore.funcs_queue.empty()", "pass")
ns = {}; exec(compile(src, "dualpipev.py", "exec"), ns)
DualPipeV = ns["DualPipeV"]

def order(p, r, m):
    log = []; f = [0, 0]; b = [0, 0]; pending = []
    o = DualPipeV.__new__(DualPipeV)
    o.rank, o.num_ranks = r, p
    o.is_first_rank, o.is_last_rank = r == 0, r == p - 1
    o.comm_ops = []; o.batch_dim = 0; o.loss_chunks = []
    def fwd(phase):
        log.append(f"F{phase}.{f[phase]}"); f[phase] += 1
    def bwd(phase, enable_zb=False):
        log.append(f"{'I' if enable_zb else 'B'}{phase}.{b[phase]}")
        if enable_zb: pending.append(f"W{phase}.{b[phase]}")
        b[phase] += 1
    o._forward_compute_chunk = fwd
    o._backward_compute_chunk = bwd
    o._forward_backward_compute_chunk = lambda p0, p1: (log.append("&"), fwd(p0), bwd(p1))
    o._weight_chunk = lambda: log.append(pending.pop(0))
    for name in ["_recv_forward", "_send_forward", "_recv_backward", "_send_backward", "_commit_and_wait_comm",
                 "_reset_states", "_free_tensors"]:
        setattr(o, name, lambda *a, **k: None)
    o.step(None, num_chunks=m, criterion=lambda *a: None, labels=[])
    return " ".join(log)

for p, m in [(2, 4), (2, 5), (3, 7), (4, 9)]:
    for r in range(p):
        print(f'{{{p}, {m}, {r}, "{order(p, r, m)}"}},')
