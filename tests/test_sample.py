import pytest
import torch

from charrnn.errors import CharRNNError
from charrnn.model import CharRNN, hidden_tensors
import charrnn.sample as sample_module
from charrnn.sample import ReferenceStepper, Sampler, Stepper, _Loop, pick, sample_text
from charrnn.vocab import Vocab

B, V, H = 3, 11, 16
VOCAB = Vocab(list("abcdefghij\n"))


def random_model(cell, num_layers=2, embed_dim=0, seed=0):
    torch.manual_seed(seed)
    model = CharRNN(V, H, num_layers, cell, embed_dim=embed_dim)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.4)
    return model.eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers, embed_dim, batch", [(1, 0, 3), (3, 0, 3), (2, 5, 3),
                                                         (2, 0, 1)])
def test_fast_step_equals_nn_module(cell, num_layers, embed_dim, batch):
    model = random_model(cell, num_layers, embed_dim)
    fast, ref = Stepper(model, batch), ReferenceStepper(model, batch)
    with torch.no_grad():
        _, hidden = model(torch.randint(V, (batch, 4)))
        fast.load(hidden)
        ref.load(hidden)
        for _ in range(5):
            ids = torch.randint(V, (batch,))
            fast.ids.copy_(ids)
            ref.ids.copy_(ids)
            torch.testing.assert_close(fast.step(), ref.step(), rtol=1e-5, atol=1e-5)
        for a, b in zip(hidden_tensors(fast.hidden()), hidden_tensors(ref.hidden())):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_loaded_state_round_trips():
    model = random_model("lstm", 3)
    stepper = Stepper(model, 2)
    with torch.no_grad():
        _, hidden = model(torch.randint(V, (2, 4)))
    stepper.load(hidden)
    for a, b in zip(hidden_tensors(stepper.hidden()), hidden_tensors(hidden)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fast_and_reference_paths_give_the_same_text(cell):
    model = random_model(cell)
    kwargs = dict(length=200, prime="abc", temperature=1.0, seed=7)
    assert sample_text(model, VOCAB, reference=True, **kwargs) == sample_text(model, VOCAB, **kwargs)


def test_same_seed_same_text_other_seed_other_text():
    model = random_model("lstm")
    a = sample_text(model, VOCAB, 300, seed=1)
    assert a == sample_text(model, VOCAB, 300, seed=1)
    assert a != sample_text(model, VOCAB, 300, seed=2)
    assert len(a[0]) == 300 and set(a[0]) <= set(VOCAB.chars)


def test_temperature_zero_follows_the_argmax_path():
    model = random_model("lstm")
    [text] = sample_text(model, VOCAB, 50, prime="ab", temperature=0)
    ids = torch.tensor(VOCAB.encode("ab"))
    expected = []
    with torch.no_grad():
        for _ in range(50):  # re-read the whole prefix each time: slow but obviously right
            logits, _ = model(ids[None])
            nxt = int(logits[0, -1].argmax())
            expected.append(VOCAB.chars[nxt])
            ids = torch.cat([ids, torch.tensor([nxt])])
    assert text == "".join(expected)


def test_batched_samples_are_independent_streams():
    model = random_model("lstm")
    texts = sample_text(model, VOCAB, 100, num_samples=4, seed=3)
    assert len(texts) == 4 and len(set(texts)) == 4
    # Each row is a sample of its own: the same seed gives the same batch.
    assert texts == sample_text(model, VOCAB, 100, num_samples=4, seed=3)


def test_top_k_restricts_choices():
    logits = torch.tensor([[0.0, 1.0, 5.0, 4.0]])
    gen = torch.Generator().manual_seed(0)
    draws = {int(pick(logits, 10.0, 2, gen)) for _ in range(200)}
    assert draws == {2, 3}


def test_unknown_prime_characters_are_listed():
    model = random_model("lstm")
    with pytest.raises(CharRNNError, match="'x', 'y'"):
        sample_text(model, VOCAB, 10, prime="axby")


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1}, "temperature"), ({"top_k": -2}, "top-k"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(CharRNNError, match=message):
        Sampler(random_model("lstm"), VOCAB, **kwargs)


def test_streams_in_pieces():
    sampler = Sampler(random_model("gru"), VOCAB, seed=0)
    pieces = list(sampler.generate(10, flush_every=4))
    assert [len(p[0]) for p in pieces] == [4, 4, 2]


def test_wide_single_stream_step_equals_nn_module():
    # Wide enough that one stream's products take the oneDNN path where it is available.
    torch.manual_seed(0)
    model = CharRNN(V, 192, 2, "lstm").eval()
    fast, ref = Stepper(model, 1), ReferenceStepper(model, 1)
    assert fast.layers[0]["w_hh"].numel() >= sample_module._ONEDNN_MIN
    with torch.no_grad():
        for _ in range(5):
            ids = torch.randint(V, (1,))
            fast.ids.copy_(ids)
            ref.ids.copy_(ids)
            torch.testing.assert_close(fast.step(), ref.step(), rtol=1e-4, atol=1e-5)


def test_draws_follow_the_softmax_of_logits_over_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    gen = torch.Generator().manual_seed(0)
    n = 20000
    draws = torch.stack([pick(logits, 0.7, 0, gen) for _ in range(n)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / n
    expected = torch.softmax(logits[0] / 0.7, 0)
    # Four standard errors of a proportion at n = 20000 is at most 0.015.
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.6, 3), (0.0, 0)])
def test_text_does_not_depend_on_blocking_or_on_the_graph_form_of_the_loop(temperature, top_k):
    model = random_model("gru")
    kwargs = dict(temperature=temperature, top_k=top_k, seed=11)
    whole = "".join(p[0] for p in Sampler(model, VOCAB, **kwargs).generate(150, "ab",
                                                                           flush_every=1))
    blocked = "".join(p[0] for p in Sampler(model, VOCAB, **kwargs).generate(150, "ab",
                                                                             flush_every=64))
    on_device = Sampler(model, VOCAB, **kwargs)
    on_device.on_device = True  # position kept in a tensor, ids in one buffer, as in a graph
    graph_form = "".join(p[0] for p in on_device.generate(150, "ab"))
    assert whole == blocked == graph_form
    # A shorter run draws its random numbers in a smaller block: same characters.
    assert "".join(p[0] for p in Sampler(model, VOCAB, **kwargs).generate(40, "ab")) == whole[:40]


def test_graph_capture_falls_back_where_there_is_no_cuda():
    loop = _Loop(random_model("lstm"), 1, 8, 1.0, 0, on_device=True)
    assert loop.capture() is False
    assert loop.advance == loop._advance_on_device
