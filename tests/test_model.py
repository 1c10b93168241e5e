import torch

from charrnn import CharRNN, ModelConfig


def test_vanilla_rnn_matches_the_seed_formula_by_hand():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, cell="rnn", layers=2, hidden_size=5, embed_size=3))
    ids = torch.tensor([[1, 4, 2, 6, 0, 3]])
    logits, hidden = model(ids)
    rnn = model.rnn
    h = [torch.zeros(5), torch.zeros(5)]
    expected = []
    for t in range(ids.shape[1]):
        x = model.embed.weight[ids[0, t]]
        for layer in range(2):
            w_xh, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
            b = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
            h[layer] = torch.tanh(w_hh @ h[layer] + w_xh @ x + b)  # same weights every step
            x = h[layer]
        expected.append(model.head.weight @ x + model.head.bias)  # y_t = W_hy h_t
    assert torch.allclose(logits[0], torch.stack(expected), atol=1e-6)
    assert torch.allclose(hidden[:, 0], torch.stack(h), atol=1e-6)


def test_hidden_state_carries_across_calls():
    torch.manual_seed(0)
    for cell in ("rnn", "gru", "lstm"):
        model = CharRNN(ModelConfig(vocab_size=9, cell=cell, layers=2, hidden_size=8, embed_size=4))
        ids = torch.randint(0, 9, (3, 12))
        whole, _ = model(ids)
        first, hidden = model(ids[:, :5])
        second, _ = model(ids[:, 5:], hidden)
        assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_tiny_model_overfits_a_short_text():
    torch.manual_seed(0)
    text = "the quick brown fox jumps over the lazy dog. " * 4
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text]])
    model = CharRNN(ModelConfig(vocab_size=len(chars), cell="lstm", layers=1, hidden_size=64,
                                embed_size=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
