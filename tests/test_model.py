import torch
import torch.nn.functional as F

from charrnn.core.model import CharRNN, detach_hidden

B, T, V, H = 2, 3, 5, 7


def test_rnn_matches_hand_written_recurrence():
    torch.manual_seed(0)
    model = CharRNN(V, H, num_layers=1, cell="rnn")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    idx = torch.randint(V, (B, T))
    logits, hidden = model(idx)
    r = model.rnn
    h = torch.zeros(B, H)
    expected = []
    for t in range(T):
        x = F.one_hot(idx[:, t], V).float()
        h = torch.tanh(x @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0)
        expected.append(h @ model.head.weight.T + model.head.bias)
    torch.testing.assert_close(logits, torch.stack(expected, 1))
    torch.testing.assert_close(hidden[0], h)


def test_two_chunks_with_carried_state_equal_one_pass():
    for cell in ("lstm", "gru", "rnn"):
        torch.manual_seed(0)
        model = CharRNN(V, H, num_layers=2, cell=cell).eval()
        idx = torch.randint(V, (B, 2 * T))
        whole, _ = model(idx)
        first, hidden = model(idx[:, :T])
        second, _ = model(idx[:, T:], hidden)
        torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_no_gradient_crosses_a_chunk_boundary():
    torch.manual_seed(0)
    model = CharRNN(V, H, num_layers=2)
    first, second = torch.randint(V, (B, T)), torch.randint(V, (B, T))

    def grads(carry):
        model.zero_grad()
        _, hidden = model(first)
        logits, _ = model(second, carry(hidden))
        logits.sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    detached = grads(detach_hidden)
    fresh = grads(lambda h: tuple(x.detach().clone() for x in h))  # no graph at all
    attached = grads(lambda h: h)  # control: the graph reaches back into the first chunk
    for a, b in zip(detached, fresh):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(detached, attached))


def test_lstm_forget_bias_starts_at_one():
    model = CharRNN(V, H, num_layers=2)
    for layer in range(2):
        b = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.all(b[H:2 * H] == 1)


def test_embedding_input():
    model = CharRNN(V, H, embed_dim=4)
    logits, _ = model(torch.randint(V, (B, T)))
    assert logits.shape == (B, T, V)
    assert model.embedding.weight.shape == (V, 4)


def test_accepts_compact_index_dtypes():
    torch.manual_seed(0)
    model = CharRNN(V, H).eval()
    idx = torch.randint(V, (B, T))
    ref, _ = model(idx)
    for dtype in (torch.uint8, torch.int32):
        out, _ = model(idx.to(dtype))
        torch.testing.assert_close(out, ref)


def test_overfits_a_short_text():
    torch.manual_seed(0)
    text = ("to be or not to be that is the question whether tis nobler in the mind "
            "to suffer the slings and arrows of outrageous fortune or to take arms ") * 2
    text = text[:200]
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    model = CharRNN(len(chars), 64, num_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = model(ids[None, :-1])
        loss = F.cross_entropy(logits[0], ids[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
