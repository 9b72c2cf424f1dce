"""A model that works from a blank state: training starts streams blank at staggered chunks,
and evaluation scores every character with the same context whatever the batch size."""

import pytest
import torch
from conftest import make_text, quiet

from charrnn.core.config_files import load_config
from charrnn.core.model import hidden_tensors
from charrnn.corpus.prepared import open_corpus
from charrnn.corpus.streams import blank_starts
from charrnn.inference.evaluate import blank_start_loss, evaluate
from charrnn.training.run import train
from charrnn.training.trainer import Trainer


def config(**extra):
    return load_config(overrides={
        "model.hidden_size": 32, "model.num_layers": 2, "train.batch_size": 6,
        "train.seq_len": 8, "train.warmup_steps": 5, "train.log_every": 1000,
        "train.eval_every": 1000, **extra})


def blank_rows(trainer: Trainer, steps: int) -> list[set[int]]:
    """For each of `steps` training steps, the streams whose state going in was blank."""
    seen = []
    model = trainer.wrapped

    def forward(idx, hidden):
        h = hidden_tensors(hidden)[0]  # (layers, B, H)
        seen.append({b for b in range(h.size(1)) if not h[:, b].any()})
        return model(idx, hidden)

    trainer.wrapped = forward
    for _ in range(steps):
        trainer.train_step(1e-3)
        trainer.state.step += 1
    return seen


@pytest.mark.parametrize("K", [3, 4])
def test_each_stream_starts_blank_once_every_k_chunks_taking_turns(corpus, K):
    data = open_corpus(corpus)
    trainer = Trainer(config(**{"train.reset_every": K}), data, echo=quiet, progress=False)
    steps = min(trainer.steps_per_epoch, 40)
    seen = blank_rows(trainer, steps)
    assert seen[0] == set(range(6))  # the epoch starts blank
    for i in range(1, steps):
        assert seen[i] == {b for b in range(6) if (i + b) % K == 0}, i


def test_without_resets_streams_start_blank_only_at_the_epoch_start(corpus):
    data = open_corpus(corpus)
    trainer = Trainer(config(**{"train.reset_every": 0}), data, echo=quiet, progress=False)
    seen = blank_rows(trainer, min(trainer.steps_per_epoch, 20))
    assert seen[0] == set(range(6)) and not any(seen[1:])


def test_blank_starts_are_the_same_for_any_split_of_the_rows():
    full = blank_starts(5, 0, 12, torch.device("cpu"))
    parts = [blank_starts(5, a, b, torch.device("cpu")) for a, b in [(0, 4), (4, 8), (8, 12)]]
    assert torch.equal(torch.cat(parts, dim=1), full)
    assert blank_starts(0, 0, 12, torch.device("cpu")) is None
    assert full[:, :, 0].sum(dim=0).tolist() == [4] * 12  # each row blank once in 5 chunks


def test_the_default_resets_and_the_resume_are_exact(corpus, workdir):
    """Resets depend only on the step and the row: a resumed run is the uninterrupted one."""
    data = open_corpus(corpus)
    cfg = config(**{"train.max_steps": 14, "train.decay_steps": 14, "train.eval_every": 7})
    assert cfg.train.reset_every > 0
    full = train(cfg, data, runs_dir="full", echo=quiet, progress=False)
    half = train(config(**{"train.max_steps": 7, "train.decay_steps": 14,
                           "train.eval_every": 7}), data, runs_dir="half", echo=quiet,
                 progress=False)
    from charrnn.training.run import resume
    resumed = resume(half.run_dir, {"train": {"max_steps": 14}}, echo=quiet, progress=False)
    assert resumed.last_val_loss == full.last_val_loss


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small LSTM trained for 300 steps on word-like text: (model, validation ids)."""
    root = tmp_path_factory.mktemp("trained")
    path = root / "words.txt"
    path.write_text(make_text(120_000, seed=3), encoding="utf-8")
    data = open_corpus(path, data_root=root / "data")
    cfg = load_config(overrides={
        "model.hidden_size": 64, "model.num_layers": 1, "train.batch_size": 16,
        "train.seq_len": 32, "train.max_steps": 300, "train.decay_steps": 300,
        "train.eval_every": 300, "train.lr": 0.01, "train.warmup_steps": 10,
        "train.log_every": 1000})
    result = train(cfg, data, runs_dir=root / "runs", echo=quiet, progress=False)
    from charrnn.core.checkpoint import load_checkpoint
    from charrnn.inference.trained import model_from_checkpoint
    model, _, _ = model_from_checkpoint(load_checkpoint(result.run_dir / "last.pt"))
    return model, data.split("val")


def test_the_score_does_not_depend_on_the_batch_size(trained):
    model, val = trained
    one = evaluate(model, val, 1, 32, "cpu", context=128)
    for B in (8, 32, 128):
        assert evaluate(model, val, B, 32, "cpu", context=128) == pytest.approx(one, abs=0.01), B
    # Without the burn-in, each stream's blank start shows in the score.
    assert evaluate(model, val, 128, 32, "cpu", context=0) > one + 0.01


def test_a_trained_model_works_from_a_blank_state(trained):
    model, val = trained
    blank = blank_start_loss(model, val, "cpu", length=200, starts=64)
    carried = evaluate(model, val, 1, 32, "cpu")
    assert blank < carried + 0.15
