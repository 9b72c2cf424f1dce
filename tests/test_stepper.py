"""The written-out step (inference/stepper.py) against the plain nn.GRU/LSTM/RNN call.

The basic cases (every cell, 1 and 3 layers, an embedding, B = 1 and 3) are in
test_sample.py; here: widths where BLAS takes its blocked paths, a long run of steps,
ids handed over as a new tensor (as the sampler does), and the bf16 products.
"""

import pytest
import torch

from charrnn.core.model import CharRNN, hidden_tensors
from charrnn.inference.stepper import ReferenceStepper, Stepper

V = 11


def wide_model(cell, H=192, num_layers=2, seed=0):
    torch.manual_seed(seed)
    return CharRNN(V, H, num_layers, cell).eval()


def run_both(fast, ref, steps, batch, seed=1):
    """Feed the same random ids to both; yield their logits after each step."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(V, (batch,), generator=gen)
        fast.ids.copy_(ids)
        ref.ids.copy_(ids)
        yield fast.step(), ref.step()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch", [1, 4])
def test_wide_step_equals_nn_module_over_many_steps(cell, batch):
    model = wide_model(cell)
    fast, ref = Stepper(model, batch), ReferenceStepper(model, batch)
    with torch.no_grad():
        _, hidden = model(torch.randint(V, (batch, 7)))
        fast.load(hidden)
        ref.load(hidden)
        for a, b in run_both(fast, ref, 50, batch):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(hidden_tensors(fast.hidden()), hidden_tensors(ref.hidden())):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_ids_handed_over_as_a_new_tensor_are_read():
    # The sampler replaces `ids` by the row its draw wrote, rather than copying into it.
    model = wide_model("gru", H=16)
    fast, ref = Stepper(model, 2), ReferenceStepper(model, 2)
    with torch.no_grad():
        for ids in ([1, 2], [3, 4], [5, 0]):
            fast.ids = torch.tensor(ids)
            ref.ids = torch.tensor(ids)
            torch.testing.assert_close(fast.step(), ref.step(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_step_stays_close_to_fp32(cell):
    model = wide_model(cell, H=64)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)  # gates away from saturation: errors show
    exact, half = Stepper(model, 4), Stepper(model, 4, precision="bf16")
    gen = torch.Generator().manual_seed(1)
    diffs = []
    with torch.no_grad():
        for _ in range(20):
            # Each step from the same state: a chaotic model (an RNN at this gain is one)
            # would otherwise grow any difference, bf16 or not, over the steps.
            half.load(exact.hidden())
            ids = torch.randint(V, (4,), generator=gen)
            half.ids.copy_(ids)
            exact.ids.copy_(ids)
            a, b = exact.step(), half.step()
            diffs.append(((a - b).abs().max() / a.abs().max()).item())
            states = zip(hidden_tensors(exact.hidden()), hidden_tensors(half.hidden()))
            diffs += [(x - y).abs().max().item() for x, y in states]  # |h| <= 1, c's too here
    assert half.logits.dtype == torch.float32 and half.hcat.dtype == torch.float32
    assert max(diffs) < 0.04  # measured here: logits 0.8%, states 2.2% (bf16: 8-bit mantissa)
    assert max(diffs) > 0  # it did compute in bf16


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        Stepper(wide_model("gru", H=8), 1, precision="fp16")
