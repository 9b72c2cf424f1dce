"""The precision policy (which part computes in which dtype, when gradients are scaled)
and the device resolver. The CUDA-marked tests check the same on a real GPU."""

import warnings

import pytest
import torch
from conftest import quiet

from charrnn.core import precision as plan
from charrnn.core.config_files import load_config
from charrnn.core.errors import ConfigError
from charrnn.core.model import CharRNN, hidden_tensors
from charrnn.core.precision import autocast, bf16_kernel_works, resolve_precision
from charrnn.corpus.prepared import open_corpus
from charrnn.training.run import train
from charrnn.training.trainer import Trainer

CPU = torch.device("cpu")
B, T, V, H = 2, 3, 5, 7



def test_fp32_is_fp32_throughout():
    p = resolve_precision("fp32", CPU)
    assert (p.name, p.autocast, p.recurrent, p.head, p.scaler, p.cast) == (
        "fp32", None, torch.float32, torch.float32, False, None)


@pytest.fixture
def bf16_units(monkeypatch):
    """Set whether this CPU has bf16 units (oneDNN's check), whatever it really has."""
    def set_to(value: bool):
        monkeypatch.setattr(plan, "native_bf16", lambda device: value)
    return set_to


def test_bf16_casts_the_recurrent_layers_and_keeps_master_weights_fp32(bf16_units):
    bf16_units(True)
    p = resolve_precision("bf16", CPU)
    assert (p.autocast, p.recurrent, p.head, p.scaler, p.cast) == (
        torch.bfloat16, torch.bfloat16, torch.bfloat16, False, torch.bfloat16)
    assert "recurrent layers bf16, head bf16" in p.describe(CPU) and not p.why
    bf16_units(False)  # still honoured, but said to be slower and why
    p = resolve_precision("bf16", CPU)
    assert p.recurrent == torch.bfloat16 and "no bf16 units" in p.why and "slower" in p.why


@pytest.mark.parametrize("units, cell, hidden, ratio, picked, why", [
    (False, "lstm", 256, 3.0, "fp32", "no bf16 units"),
    (True, "lstm", 256, 1.7, "bf16", "1.70x faster"),
    (True, "gru", 256, 0.9, "fp32", "0.90x the fp32 one"),
    (True, "rnn", 256, 3.0, "fp32", "not yet measured"),
    (True, "lstm", 64, 3.0, "fp32", "hidden size 64"),
])
def test_auto_picks_bf16_only_with_units_a_faster_step_and_a_checked_cell(
        bf16_units, units, cell, hidden, ratio, picked, why):
    bf16_units(units)
    measured = []
    p = resolve_precision("auto", CPU, cell, lambda: measured.append(1) or ratio, hidden)
    assert p.name == picked and why in p.why and p.why.startswith("auto: ")
    assert p.recurrent == (torch.bfloat16 if picked == "bf16" else torch.float32)
    # Measured only where the answer depends on it.
    assert measured == ([1] if units and cell != "rnn" and hidden >= 128 else [])


def test_auto_on_a_gpu_is_fp32_until_measured_there():
    for device in ("cuda", "mps"):
        p = resolve_precision("auto", torch.device(device), "lstm", lambda: 9.0)
        assert p.name == "fp32" and "not yet measured" in p.why


def test_a_resumed_auto_run_keeps_the_plan_it_started_with(bf16_units):
    bf16_units(True)
    assert resolve_precision("auto", CPU, "lstm", lambda: 0.5, 256, started="bf16").name == "bf16"
    assert resolve_precision("auto", CPU, "lstm", lambda: 9.0, 256, started="fp32").name == "fp32"
    bf16_units(False)  # resumed on a CPU without bf16 units: decided again
    assert resolve_precision("auto", CPU, "lstm", lambda: 9.0, 256, started="bf16").name == "fp32"


def test_measuring_leaves_the_random_state_and_the_gradients_alone():
    rnn = torch.nn.LSTM(V, 16, 1, batch_first=True)
    before = torch.get_rng_state()
    ratio = plan.measure_speedup(rnn, 4, 8, CPU, rounds=3)
    assert ratio > 0 and torch.equal(torch.get_rng_state(), before)
    assert all(p.grad is None for p in rnn.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_bf16_cast_matches_fp32_and_its_gradients_reach_the_fp32_weights(cell):
    if not bf16_kernel_works(CPU, cell):
        pytest.skip(f"no bf16 {cell} kernel on this CPU")
    torch.manual_seed(0)
    model = CharRNN(V, 32, 2, cell)
    idx = torch.randint(V, (4, 12))
    hidden = model.init_hidden(4)
    grads, outs = {}, {}
    for dtype in (None, torch.bfloat16):
        model.recurrent_dtype = dtype
        model.zero_grad()
        logits, h = model(idx, hidden)
        logits.float().logsumexp(-1).sum().backward()
        outs[dtype] = (logits.detach(), h)
        grads[dtype] = [p.grad.clone() for p in model.rnn.parameters()]
    (ref, h_ref), (low, h_low) = outs[None], outs[torch.bfloat16]
    assert low.dtype == torch.float32 and (low - ref).abs().max() < 0.05  # bf16 rounding
    for a, b in zip(hidden_tensors(h_ref), hidden_tensors(h_low)):
        assert b.dtype == torch.float32 and (a - b).abs().max() < 0.05  # carried in fp32
    for p, g32, g16 in zip(model.rnn.parameters(), grads[None], grads[torch.bfloat16]):
        assert p.dtype == torch.float32 and g16.dtype == torch.float32
        assert torch.allclose(g16, g32, rtol=0.1, atol=0.02 * g32.abs().max().item())


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
    model.recurrent_dtype = precision.cast
    with autocast(device, precision.autocast):
        model(idx)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_each_part_computes_in_the_planned_dtype_on_cpu(cell, setting):
    # Under a plain bf16 autocast on CPU, nn.RNN would run in bf16, nn.GRU in fp32 and
    # oneDNN's nn.LSTM fails on processors without bf16: the plan casts them all instead.
    if setting == "bf16" and not bf16_kernel_works(CPU, cell):
        pytest.skip(f"no bf16 {cell} kernel on this CPU")
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
    assert any("recurrent layers bf16, head bf16" in line for line in lines)


# ----------------------------------------------------------------------------------------
# on a GPU (scripts/gpu_check.sh runs these)

GPU = torch.device("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("setting, rnn, head", [
    ("fp32", torch.float32, torch.float32),
    ("bf16", torch.bfloat16, torch.bfloat16),  # fp32 recurrent where cuDNN lacks bf16 (< 9.13)
    ("fp16", torch.float16, torch.float16),
])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_each_part_computes_in_the_planned_dtype_on_cuda(setting, rnn, head, cell):
    if setting == "bf16" and not bf16_kernel_works(GPU, cell):
        rnn = torch.float32
    p = resolve_precision(setting, GPU, cell)
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

    from charrnn.core.checkpoint import load_checkpoint
    from charrnn.inference.trained import model_from_checkpoint
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


# ----------------------------------------------------------------------------------------
# checkpoints stay precision-free


def _small(precision, steps, **more):
    return load_config(overrides={"model.hidden_size": 16, "train.batch_size": 4,
                                  "train.seq_len": 8, "train.max_steps": steps,
                                  "train.eval_every": 3, "train.precision": precision,
                                  "train.device": "cpu", **more})


@pytest.mark.parametrize("first, then", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_run_resumes_in_the_other_precision(corpus, workdir, first, then):
    from charrnn.core.checkpoint import load_checkpoint
    from charrnn.training.run import resume

    data = open_corpus(corpus)
    half = train(_small(first, 3), data, runs_dir="runs", name="r", echo=quiet, progress=False)
    lines = []
    done = resume(half.run_dir, {"train": {"max_steps": 6, "precision": then}},
                  echo=lines.append, progress=False)
    assert done.step == 6 and any(f"precision {then}" in line for line in lines)
    state = load_checkpoint(done.run_dir / "last.pt")
    assert state["precision"] == then
    assert all(t.dtype == torch.float32 for t in state["model"].values())


def test_bf16_resumes_exactly_and_validates_in_fp32(corpus, workdir):
    from charrnn.core.checkpoint import load_checkpoint
    from charrnn.inference.evaluate import evaluate
    from charrnn.inference.trained import model_from_checkpoint
    from charrnn.training.run import resume

    data = open_corpus(corpus)
    full = train(_small("bf16", 8), data, runs_dir="runs", name="full", echo=quiet,
                 progress=False)
    half = train(_small("bf16", 4), data, runs_dir="runs", name="half", echo=quiet,
                 progress=False)
    resume(half.run_dir, {"train": {"max_steps": 8}}, echo=quiet, progress=False)
    a, b = load_checkpoint(full.run_dir / "last.pt"), load_checkpoint(half.run_dir / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # The validation loss is the fp32 figure of the saved weights.
    model, _, _ = model_from_checkpoint(a)
    t = _small("bf16", 8).train
    fp32 = evaluate(model, data.split("val"), t.eval_batch_size, t.seq_len, CPU,
                    context=t.eval_context)
    assert a["last_val_loss"] == pytest.approx(fp32, abs=1e-9)


def test_eval_in_bf16_scores_within_a_hundredth_of_fp32(corpus, workdir):
    import json

    from conftest import TINY, run

    assert run("train", corpus, *TINY, "--name", "e").exit_code == 0
    scores = {}
    for precision in ("fp32", "bf16"):
        r = run("eval", corpus, "--precision", precision, "--json")
        assert r.exit_code == 0, r.output
        scores[precision] = json.loads(r.stdout)["files"][0]["nats"]
    assert scores["bf16"] != scores["fp32"] and abs(scores["bf16"] - scores["fp32"]) < 0.01


def test_the_kernel_probe_leaves_the_random_state_alone():
    bf16_kernel_works.cache_clear()
    before = torch.get_rng_state()
    bf16_kernel_works(CPU, "gru")
    assert torch.equal(torch.get_rng_state(), before)


def test_a_checkpoint_without_a_recorded_plan_resumes_in_fp32(corpus, workdir, monkeypatch):
    import charrnn.training.setup as setup_module
    from charrnn.core.checkpoint import load_checkpoint, save_checkpoint
    from charrnn.training.run import resume

    if not bf16_kernel_works(CPU, "gru"):
        pytest.skip("no bf16 gru kernel on this CPU")
    monkeypatch.setattr(plan, "native_bf16", lambda device: True)
    monkeypatch.setattr(setup_module, "cached_speedup", lambda *a, **k: 9.0)
    data = open_corpus(corpus)
    lines = []
    first = train(_small("auto", 2, **{"model.hidden_size": 128, "model.cell": "gru"}), data,
                  runs_dir="runs", name="old", echo=lines.append, progress=False)
    assert any("precision bf16" in line for line in lines)
    state = load_checkpoint(first.run_dir / "last.pt")
    del state["precision"]  # as written before the plan was recorded, when auto was fp32
    save_checkpoint(first.run_dir / "last.pt", {k: v for k, v in state.items()
                                                if k not in ("kind", "format_version")})
    lines.clear()
    resume(first.run_dir, {"train": {"max_steps": 4}}, echo=lines.append, progress=False)
    assert any("precision fp32" in line and "as when this run started" in line
               for line in lines)

