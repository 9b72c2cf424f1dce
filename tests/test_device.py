"""The precision policy (which part computes in which dtype, when gradients are scaled)
and the device resolver. The CUDA-marked tests check the same on a real GPU."""

import warnings

import pytest
import torch
from conftest import quiet

from charrnn.core.config_files import load_config
from charrnn.core.device import autocast, resolve_precision
from charrnn.core.errors import ConfigError
from charrnn.core.model import CharRNN
from charrnn.corpus.prepared import open_corpus
from charrnn.training.run import train
from charrnn.training.trainer import Trainer

CPU = torch.device("cpu")
B, T, V, H = 2, 3, 5, 7



@pytest.mark.parametrize("setting", ["auto", "fp32"])
def test_auto_and_fp32_are_fp32_throughout(setting):
    p = resolve_precision(setting, CPU)
    assert (p.name, p.autocast, p.recurrent, p.head, p.scaler) == (
        "fp32", None, torch.float32, torch.float32, False)


def test_bf16_runs_the_head_in_bf16_and_the_recurrent_layers_in_fp32():
    p = resolve_precision("bf16", CPU)
    assert (p.autocast, p.recurrent, p.head, p.scaler) == (
        torch.bfloat16, torch.float32, torch.bfloat16, False)
    assert "recurrent layers fp32, head bf16" in p.describe(CPU)


@pytest.mark.parametrize("setting, device, message", [
    ("fp16", "cpu", "fp16 needs a CUDA GPU"),
    ("fp16", "mps", "fp16 needs a CUDA GPU"),
    ("bf16", "mps", "supported on cuda and cpu"),
])
def test_settings_a_device_cannot_honour_are_refused(setting, device, message):
    with pytest.raises(ConfigError, match=message):
        resolve_precision(setting, torch.device(device))


def dtypes_seen(model, idx, precision, device):
    """The dtype of what the recurrent layers and the head output under `precision`."""
    seen = {}
    hooks = [model.rnn.register_forward_hook(lambda m, i, o: seen.update(rnn=o[0].dtype)),
             model.head.register_forward_hook(lambda m, i, o: seen.update(head=o.dtype))]
    with autocast(device, precision.autocast):
        model(idx)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_each_part_computes_in_the_planned_dtype_on_cpu(cell, setting):
    # Under a plain bf16 autocast on CPU, nn.RNN would run in bf16, nn.GRU in fp32 and
    # oneDNN's nn.LSTM fails on processors without bf16: the plan makes them all fp32.
    torch.manual_seed(0)
    p = resolve_precision(setting, CPU)
    model = CharRNN(V, H, 2, cell)
    seen = dtypes_seen(model, torch.randint(V, (B, T)), p, CPU)
    assert seen == {"rnn": p.recurrent, "head": p.head}


@pytest.mark.parametrize("fused", [True, False])
def test_bf16_training_on_cpu_runs_and_reports_its_plan(corpus, workdir, fused):
    lines = []
    cfg = load_config(overrides={"model.hidden_size": 16, "train.batch_size": 4,
                                 "train.seq_len": 8, "train.max_steps": 6,
                                 "train.eval_every": 3, "train.precision": "bf16",
                                 "train.device": "cpu"})
    result = train(cfg, open_corpus(corpus), runs_dir="runs", echo=lines.append, progress=False,
                   fused=fused)
    assert result.step == 6 and result.best_val_loss < 10
    assert any("recurrent layers fp32, head bf16" in line for line in lines)


# ----------------------------------------------------------------------------------------
# on a GPU (scripts/gpu_check.sh runs these)

GPU = torch.device("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("setting, rnn, head", [
    ("fp32", torch.float32, torch.float32),
    ("bf16", torch.float32, torch.bfloat16),
    ("fp16", torch.float16, torch.float16),
])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_each_part_computes_in_the_planned_dtype_on_cuda(setting, rnn, head, cell):
    p = resolve_precision(setting, GPU)
    assert (p.recurrent, p.head, p.scaler) == (rnn, head, setting == "fp16")
    model = CharRNN(V, 32, 2, cell).to(GPU)
    seen = dtypes_seen(model, torch.randint(V, (B, T), device=GPU), p, GPU)
    assert seen == {"rnn": rnn, "head": head}


@pytest.mark.cuda
def test_fp16_enables_the_scaler_and_bf16_does_not(corpus, workdir):
    data = open_corpus(corpus)
    for setting, scaled in (("fp16", True), ("bf16", False), ("fp32", False)):
        cfg = load_config(overrides={"model.hidden_size": 16, "train.batch_size": 4,
                                     "train.seq_len": 8, "train.precision": setting,
                                     "train.device": "cuda"})
        assert Trainer(cfg, data, echo=quiet, progress=False).scaler.is_enabled() == scaled


@pytest.mark.cuda
def test_no_non_contiguous_rnn_weight_warning_on_cuda(corpus, workdir):
    # cuDNN warns (and copies the weights every call) when they are not one flat buffer:
    # check a fresh run, a resumed one, a model loaded from a checkpoint and the DDP wrap.
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from charrnn.core.checkpoint import load_checkpoint, model_from_checkpoint
    from charrnn.training.run import resume

    data = open_corpus(corpus)
    cfg = load_config(overrides={"model.hidden_size": 32, "train.batch_size": 4,
                                 "train.seq_len": 8, "train.max_steps": 4,
                                 "train.eval_every": 2, "train.device": "cuda"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = train(cfg, data, runs_dir="runs", name="run", echo=quiet, progress=False)
        resume(first.run_dir, {"train": {"max_steps": 8}}, echo=quiet, progress=False)
        model, _, _ = model_from_checkpoint(load_checkpoint(first.run_dir / "last.pt"))
        model = model.to(GPU).train()
        idx = torch.randint(V, (B, T), device=GPU)
        model(idx)[0].sum().backward()
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        dist.init_process_group("nccl", rank=0, world_size=1)
        try:
            wrapped = DistributedDataParallel(model, device_ids=[GPU.index or 0],
                                              broadcast_buffers=False)
            wrapped(idx)[0].sum().backward()
        finally:
            dist.destroy_process_group()
