"""Ports of nanoGPT, makemore, minGPT and PyTorch's examples (MNIST, word language model, DCGAN,
VAE), each one source text (tests/ports) run on PyTorch and on needle from the same weights:
losses, outputs, gradients and parameters after a few optimizer steps agree (float64, so the
result does not depend on the CPU's float32 rounding). Random parts (dropout, randn_like,
multinomial) draw different numbers in the two frameworks by design: the compared runs feed
the noise explicitly or set dropout to 0, and the random paths are checked for their shapes,
ranges and statistics on their own."""
import numpy as np
import pytest
import torch

import needle as ndl
from needle import interop
from ports import With, as_numpy, dcgan, frameworks, makemore, mingpt, mnist, nanogpt, vae, word_language_model

FRAMEWORKS = frameworks()
RTOL, ATOL = 1e-8, 1e-11  # float64 runs of a few steps: rounding differs around 1e-15, a wrong formula by far more


def both(port, torch_fw=None, needle_fw=None):
    """The port built on torch and on needle (optionally on wrapped framework modules)."""
    t, n = FRAMEWORKS["torch"], FRAMEWORKS["needle"]
    return port.build(torch_fw or t[0], *t[1:]), port.build(needle_fw or n[0], *n[1:])


def twin(torch_model, needle_model):
    """Both models in float64 with the torch model's weights."""
    torch_model.double()
    needle_model.double()
    interop.from_torch(needle_model, torch_model.state_dict())
    return torch_model, needle_model


def close(ours, theirs, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64),
                               rtol=rtol, atol=atol)


def assert_same_state(needle_model, torch_model, rtol=RTOL, atol=ATOL):
    """Every parameter and buffer of the torch model equals the needle twin's (PyTorch's names and layouts)."""
    ours = interop.torch_state_dict_arrays(needle_model)
    theirs = {k: v for k, v in torch_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value.numpy(), rtol=rtol, atol=atol, err_msg=key)


def assert_same_grads(needle_model, torch_model, rtol=RTOL, atol=ATOL):
    ours = interop.torch_state_dict_arrays(needle_model, grads=True)
    for key, p in torch_model.named_parameters():
        np.testing.assert_allclose(ours[key], p.grad.numpy(), rtol=rtol, atol=atol, err_msg=key)


def tokens(n, vocab, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, n)


# --- nanoGPT --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flash", [True, False], ids=["sdpa", "manual-attention"])
def test_nanogpt_forward_gradients_and_training_steps_match_torch(flash):
    T, N = both(nanogpt)
    cfg = nanogpt.GPTConfig(flash=flash)
    torch.manual_seed(0)
    tm, nm = twin(T.GPT(cfg), N.GPT(cfg))
    assert nm.get_num_params() == tm.get_num_params()
    data = tokens(200, cfg.vocab_size).astype(np.uint16)
    ix = np.random.RandomState(1).randint(0, len(data) - cfg.block_size, 3)
    (tx, ty), (nx, ny) = T.get_batch(data, ix, cfg.block_size), N.get_batch(data, ix, cfg.block_size)
    tl, tloss = tm(tx, ty)
    nl, nloss = nm(nx, ny)
    close(as_numpy(nl), as_numpy(tl))
    close(nloss.item(), tloss.item())
    tloss.backward()
    nloss.backward()
    assert_same_grads(nm, tm)
    tm.zero_grad(set_to_none=True)
    nm.zero_grad(set_to_none=True)

    topt = tm.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
    nopt = nm.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
    assert [sum(p.numel() for p in g["params"]) for g in nopt.param_groups] == \
        [sum(p.numel() for p in g["params"]) for g in topt.param_groups]
    rs = np.random.RandomState(2)
    for it in range(4):  # warmup, then the cosine decay: the lr is written into the groups each time
        ixs = [rs.randint(0, len(data) - cfg.block_size, 3) for _ in range(2)]  # two micro-steps
        t_loss, t_norm = T.train_step(tm, topt, [T.get_batch(data, i, cfg.block_size) for i in ixs], it)
        n_loss, n_norm = N.train_step(nm, nopt, [N.get_batch(data, i, cfg.block_size) for i in ixs], it)
        close(n_loss, t_loss)
        close(n_norm, t_norm)
        assert nopt.param_groups[0]["lr"] == topt.param_groups[0]["lr"] == T.get_lr(it)
        assert_same_state(nm, tm)
    assert all(p.grad is None for p in nm.parameters())  # zero_grad(set_to_none=True)


def test_nanogpt_tied_head_is_one_tensor_as_in_torch():
    T, N = both(nanogpt)
    cfg = nanogpt.GPTConfig()
    tm, nm = twin(T.GPT(cfg), N.GPT(cfg))
    assert nm.lm_head.weight is nm.transformer.wte.weight and tm.lm_head.weight is tm.transformer.wte.weight
    assert [n for n, _ in nm.named_parameters()] == [n for n, _ in tm.named_parameters()]


def test_nanogpt_generate_greedy_matches_torch_and_top_k_sampling_stays_in_the_top_k():
    T, N = both(nanogpt)
    cfg = nanogpt.GPTConfig(block_size=4)
    torch.manual_seed(1)
    tm, nm = twin(T.GPT(cfg), N.GPT(cfg))
    start = tokens(2, cfg.vocab_size, seed=3).reshape(2, 1)
    # top_k=1 leaves one token with probability 1: multinomial has no choice, the runs must agree
    # (7 new tokens: the context is cropped to the block size after 3)
    greedy_t = tm.generate(torch.tensor(start), 7, top_k=1)
    greedy_n = nm.generate(ndl.tensor(start), 7, top_k=1)
    assert greedy_n.dtype == ndl.int64 and greedy_n.shape == (2, 8)
    np.testing.assert_array_equal(greedy_n.numpy(), greedy_t.numpy())
    np.random.seed(5)
    idx = nm.generate(ndl.tensor(start), 6, temperature=0.8, top_k=2)
    assert idx.shape == (2, 7) and not idx.requires_grad
    for t in range(1, 7):  # each sampled token is one of the two likeliest after its context
        logits, _ = nm(idx[:, max(0, t - cfg.block_size):t])
        top2 = np.argsort(-logits.numpy()[:, -1, :], axis=1)[:, :2]
        assert all(idx.numpy()[b, t] in top2[b] for b in range(2))


# --- makemore (Zero to Hero, part 3) ------------------------------------------------------------------

WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "harper", "evelyn"]


def vocabulary():
    chars = sorted(set("".join(WORDS)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    return stoi, {i: s for s, i in stoi.items()}


def test_makemore_mlp_with_batch_norm_trains_as_in_torch():
    T, N = both(makemore)
    stoi, itos = vocabulary()
    (Xt, Yt), (Xn, Yn) = T.build_dataset(WORDS, stoi, 3), N.build_dataset(WORDS, stoi, 3)
    assert Xn.dtype == ndl.int64 and Yn.dtype == ndl.int64
    np.testing.assert_array_equal(Xn.numpy(), Xt.numpy())
    np.testing.assert_array_equal(Yn.numpy(), Yt.numpy())
    Pt = {k: v.detach().double().requires_grad_(v.requires_grad) for k, v in T.init(len(stoi), 4, 16, 3).items()}
    Pn = {k: ndl.tensor(v.detach().numpy(), requires_grad=v.requires_grad) for k, v in Pt.items()}
    rs = np.random.RandomState(0)
    for _ in range(6):
        ix = rs.randint(0, Xt.shape[0], 8)
        t_loss, t_log10 = T.train_step(Pt, Xt[torch.tensor(ix)], Yt[torch.tensor(ix)], 0.1)
        n_loss, n_log10 = N.train_step(Pn, Xn[ndl.tensor(ix)], Yn[ndl.tensor(ix)], 0.1)
        close(n_loss, t_loss)
        close(n_log10, t_log10)
    for key in Pt:  # parameters moved by p.data += -lr * p.grad, running statistics reassigned
        close(Pn[key].numpy(), as_numpy(Pt[key]))
        assert Pn[key].requires_grad == Pt[key].requires_grad, key
    close(N.split_loss(Pn, Xn, Yn), T.split_loss(Pt, Xt, Yt))


def test_makemore_init_and_sampling_draw_reproducibly_from_a_generator():
    _, N = both(makemore)
    stoi, itos = vocabulary()
    P, again = N.init(len(stoi), 4, 16, 3), N.init(len(stoi), 4, 16, 3)
    for key, value in P.items():  # the same seed gives the same tensors (numpy's numbers, not torch's)
        np.testing.assert_array_equal(value.numpy(), again[key].numpy())
        assert value.dtype == ndl.float32
    assert P["C"].shape == (len(stoi), 4) and P["W1"].shape == (12, 16) and P["bngain"].shape == (1, 16)
    assert abs(P["C"].numpy().std() - 1) < 0.35 and float(np.abs(P["b2"].numpy()).max()) == 0.0
    assert [p.requires_grad for p in N.parameters(P)] == [True] * 7 and not P["bnmean_running"].requires_grad
    names = N.sample(P, 3, itos, 6)
    assert names == N.sample(P, 3, itos, 6) and names != N.sample(P, 3, itos, 6, seed=1)
    assert all(set(n) <= set(stoi) and (n.endswith(".") or len(n) == 30) and "." not in n[:-1] for n in names)


# --- minGPT -------------------------------------------------------------------------------------------

def test_mingpt_new_gelu_is_torchs_tanh_gelu_in_value_and_gradient():
    x = np.linspace(-6, 6, 61)
    T, N = both(mingpt)
    xt, xn = torch.tensor(x, requires_grad=True), ndl.tensor(x, requires_grad=True)
    yt, yn = T.NewGELU()(xt), N.NewGELU()(xn)
    close(yn.numpy(), torch.nn.functional.gelu(xt, approximate="tanh").detach().numpy(), rtol=1e-13, atol=1e-15)
    close(yn.numpy(), yt.detach().numpy(), rtol=1e-14, atol=1e-15)
    yt.sum().backward()
    yn.sum().backward()
    # 1 + tanh(u) cancels for x << 0: the gradients of the formula agree to its rounding there
    close(xn.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_mingpt_optimizer_groups_training_and_generation_match_torch():
    T, N = both(mingpt)
    cfg, train_cfg = mingpt.Config(), mingpt.TrainConfig()
    torch.manual_seed(2)
    tm, nm = twin(T.GPT(cfg), N.GPT(cfg))
    assert nm.n_params == tm.n_params
    topt, nopt = tm.configure_optimizers(train_cfg), nm.configure_optimizers(train_cfg)
    assert [len(g["params"]) for g in nopt.param_groups] == [len(g["params"]) for g in topt.param_groups] == [9, 20]
    assert [g["weight_decay"] for g in nopt.param_groups] == [0.1, 0.0]
    seq = tokens(40, cfg.vocab_size, seed=4)
    rs = np.random.RandomState(5)
    for _ in range(3):
        starts = rs.randint(0, len(seq) - cfg.block_size - 1, 4)
        x = np.stack([seq[s:s + cfg.block_size] for s in starts])
        y = np.stack([seq[s + 1:s + 1 + cfg.block_size] for s in starts])
        close(N.train_step(nm, nopt, ndl.tensor(x), ndl.tensor(y), train_cfg),
              T.train_step(tm, topt, torch.tensor(x), torch.tensor(y), train_cfg))
        assert_same_state(nm, tm)
    start = seq[:2].reshape(1, 2)
    np.testing.assert_array_equal(nm.generate(ndl.tensor(start), 6).numpy(),  # argmax by topk
                                  tm.generate(torch.tensor(start), 6).numpy())
    np.random.seed(0)
    sampled = nm.generate(ndl.tensor(start), 5, do_sample=True, top_k=3).numpy()
    assert sampled.shape == (1, 7) and sampled.min() >= 0 and sampled.max() < cfg.vocab_size


def test_mingpt_training_step_compiled_with_ndl_compile_matches_torchs_eager_steps():
    """trainer.py's step (less its loss.item(), a host read) under ndl.compile: the trace and the
    replays leave the parameters where PyTorch's eager steps do."""
    T, N = both(mingpt)
    cfg, train_cfg = mingpt.Config(), mingpt.TrainConfig()
    torch.manual_seed(2)
    tm, nm = twin(T.GPT(cfg), N.GPT(cfg))
    topt, nopt = tm.configure_optimizers(train_cfg), nm.configure_optimizers(train_cfg)

    @ndl.compile
    def step(x, y):
        logits, loss = nm(x, y)
        nm.zero_grad(set_to_none=True)
        loss.backward()
        ndl.nn.utils.clip_grad_norm_(nm.parameters(), train_cfg.grad_norm_clip)
        nopt.step()
        return loss

    seq = tokens(40, cfg.vocab_size, seed=4)
    rs = np.random.RandomState(5)
    for _ in range(4):  # eager, trace, two replays
        starts = rs.randint(0, len(seq) - cfg.block_size - 1, 4)
        x = np.stack([seq[s:s + cfg.block_size] for s in starts])
        y = np.stack([seq[s + 1:s + 1 + cfg.block_size] for s in starts])
        close(step(ndl.tensor(x), ndl.tensor(y)).item(),
              T.train_step(tm, topt, torch.tensor(x), torch.tensor(y), train_cfg))
        assert_same_state(nm, tm)


# --- PyTorch's MNIST example ----------------------------------------------------------------------

def mnist_data(n=12, side=10):
    rs = np.random.RandomState(6)
    return rs.rand(n, 1, side, side), rs.randint(0, 10, n)


def test_mnist_example_trains_with_adadelta_and_steplr_as_in_torch():
    T, N = both(mnist)
    images, labels = mnist_data()
    torch.manual_seed(3)
    kw = dict(channels=(2, 3), hidden=8, side=10, dropout=(0.0, 0.0))
    tm, nm = twin(T.Net(**kw), N.Net(**kw))
    t_losses, t_results, t_lrs = T.main(tm, torch.tensor(images), torch.tensor(labels))
    n_losses, n_results, n_lrs = N.main(nm, ndl.tensor(images), ndl.tensor(labels))
    assert len(n_losses) == len(t_losses) == 6
    close(n_losses, t_losses)
    close([r[0] for r in n_results], [r[0] for r in t_results])
    assert [r[1] for r in n_results] == [r[1] for r in t_results]
    close(n_lrs, t_lrs, rtol=1e-15)
    assert_same_state(nm, tm)


def test_mnist_net_dropout_acts_in_training_only():
    _, N = both(mnist)
    images, _ = mnist_data(n=64)
    net = N.Net(channels=(2, 3), hidden=64, side=10, dropout=(0.25, 0.5))
    x = ndl.tensor(images, dtype=ndl.float32)
    net.eval()
    ev, ev2 = net(x).numpy(), net(x).numpy()
    np.testing.assert_array_equal(ev, ev2)
    net.train()
    tr = net(x).numpy()
    assert tr.shape == (64, 10) and not np.allclose(tr, ev)
    np.testing.assert_allclose(np.exp(tr).sum(axis=1), 1, rtol=1e-5)  # log_softmax still


# --- PyTorch's word language model -----------------------------------------------------------------

@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_word_language_model_trains_with_truncated_bptt_as_in_torch(rnn_type):
    T, N = both(word_language_model)
    corpus = tokens(61, 9, seed=7)
    torch.manual_seed(4)
    tm, nm = twin(T.RNNModel(rnn_type, 9, 5, 6, 2, dropout=0.0), N.RNNModel(rnn_type, 9, 5, 6, 2, dropout=0.0))
    t_data, n_data = T.batchify(torch.tensor(corpus), 3), N.batchify(ndl.tensor(corpus), 3)
    assert tuple(n_data.shape) == tuple(t_data.shape) == (20, 3)
    np.testing.assert_array_equal(n_data.numpy(), t_data.numpy())
    t_states, n_states = [], []
    t_losses = T.train(tm, t_data, 3, 6, lr=5.0, clip=0.25,
                       after_batch=lambda m: t_states.append({k: v.clone() for k, v in m.state_dict().items()}))
    n_losses = N.train(nm, n_data, 3, 6, lr=5.0, clip=0.25,
                       after_batch=lambda m: n_states.append(interop.torch_state_dict_arrays(m)))
    assert len(n_losses) == len(t_losses) == 4  # 19 steps of bptt 6: 6, 6, 6, 1
    close(n_losses, t_losses)
    for ours, theirs in zip(n_states, t_states):
        for key, value in theirs.items():
            close(ours[key], value.numpy())


def test_word_language_model_hidden_state_repackaging_and_dropout():
    _, N = both(word_language_model)
    model = N.RNNModel("LSTM", 9, 5, 6, 2, dropout=0.5)
    h = model.init_hidden(3)
    assert isinstance(h, tuple) and [t.shape for t in h] == [(2, 3, 6)] * 2 and h[0].dtype == ndl.float32
    out, hidden = model(ndl.tensor(tokens(12, 9).reshape(4, 3)), h)
    assert out.shape == (12, 9) and hidden[0].requires_grad
    detached = N.repackage_hidden(hidden)
    assert all(not t.requires_grad for t in detached)
    np.testing.assert_array_equal(detached[1].numpy(), hidden[1].numpy())
    model.eval()  # dropout between layers off: two evaluations agree
    a, _ = model(ndl.tensor(tokens(12, 9).reshape(4, 3)), h)
    b, _ = model(ndl.tensor(tokens(12, 9).reshape(4, 3)), h)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="nhid must be equal"):
        N.RNNModel("LSTM", 9, 5, 6, 2, tie_weights=True)


# --- PyTorch's DCGAN example --------------------------------------------------------------------------

def test_dcgan_iterations_match_torch():
    rs = np.random.RandomState(8)
    noises = [rs.randn(3, 4, 1, 1) for _ in range(2)]
    images = [np.tanh(rs.randn(3, 1, 64, 64)) for _ in range(2)]
    fed = {"torch": iter(noises), "needle": iter(noises)}
    T, N = both(dcgan, torch_fw=With(torch, randn=lambda *a, **k: torch.tensor(next(fed["torch"]))),
                needle_fw=With(ndl, randn=lambda *a, **k: ndl.tensor(next(fed["needle"]))))
    torch.manual_seed(5)
    tG, tD = T.Generator(4, 2, 1), T.Discriminator(2, 1)
    tG.apply(T.weights_init)
    tD.apply(T.weights_init)
    (tG, nG), (tD, nD) = twin(tG, N.Generator(4, 2, 1)), twin(tD, N.Discriminator(2, 1))
    t_opts, n_opts = T.optimizers(tD, tG), N.optimizers(nD, nG)
    for batch in images:
        t_out = T.train_step(tD, tG, *t_opts, (torch.tensor(batch), None), 4)
        n_out = N.train_step(nD, nG, *n_opts, (ndl.tensor(batch), None), 4)
        close(n_out, t_out)
        assert_same_state(nG, tG)  # weights and BatchNorm running statistics
        assert_same_state(nD, tD)


def test_dcgan_weights_init_and_generator_output():
    _, N = both(dcgan)
    np.random.seed(1)
    G, D = N.Generator(8, 8, 3), N.Discriminator(8, 3)
    G.apply(N.weights_init)
    D.apply(N.weights_init)
    convs = np.concatenate([m.weight.numpy().ravel() for m in G.modules() if "Conv" in type(m).__name__])
    gains = np.concatenate([m.weight.numpy().ravel() for m in D.modules() if "BatchNorm" in type(m).__name__])
    assert abs(convs.mean()) < 0.002 and abs(convs.std() - 0.02) < 0.002
    assert abs(gains.mean() - 1) < 0.01 and abs(gains.std() - 0.02) < 0.01
    assert all(float(np.abs(m.bias.numpy()).max()) == 0 for m in D.modules() if "BatchNorm" in type(m).__name__)
    fake = G(ndl.randn(2, 8, 1, 1))
    assert fake.shape == (2, 3, 64, 64) and float(np.abs(fake.numpy()).max()) <= 1
    p = D(fake)
    assert p.shape == (2,) and ((p.numpy() > 0) & (p.numpy() < 1)).all()


# --- PyTorch's VAE example ----------------------------------------------------------------------------

def test_vae_training_with_the_same_noise_matches_torch():
    rs = np.random.RandomState(9)
    data = (rs.rand(12, 1, 4, 4) > 0.5).astype(np.float64)
    noises = [rs.randn(4, 3) for _ in range(3)]
    fed = {"torch": iter(noises), "needle": iter(noises)}
    T, N = both(vae, torch_fw=With(torch, randn_like=lambda s: torch.tensor(next(fed["torch"]))),
                needle_fw=With(ndl, randn_like=lambda s: ndl.tensor(next(fed["needle"]))))
    torch.manual_seed(6)
    tm, nm = twin(T.VAE(16, 8, 3), N.VAE(16, 8, 3))
    t_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(data), torch.zeros(12)),
                                           batch_size=4)
    n_loader = ndl.utils.data.DataLoader(ndl.utils.data.TensorDataset(ndl.tensor(data), ndl.zeros(12)),
                                         batch_size=4)
    close(N.train(nm, n_loader, N.make_optimizer(nm)), T.train(tm, t_loader, T.make_optimizer(tm)))
    assert_same_state(nm, tm)


def test_vae_loss_gradient_matches_torch_and_reparameterize_draws_standard_normal_noise():
    T, N = both(vae)
    torch.manual_seed(7)
    tm, nm = twin(T.VAE(16, 8, 3), N.VAE(16, 8, 3))
    rs = np.random.RandomState(10)
    x, mu, logvar = rs.rand(5, 16), rs.randn(5, 3), rs.randn(5, 3)
    recon = 1 / (1 + np.exp(-rs.randn(5, 16)))
    args_t = [torch.tensor(a, requires_grad=True) for a in (recon, x, mu, logvar)]
    args_n = [ndl.tensor(a, requires_grad=True) for a in (recon, x, mu, logvar)]
    lt, ln = T.loss_function(*args_t, n_in=16), N.loss_function(*args_n, n_in=16)
    close(ln.item(), lt.item(), rtol=1e-13)
    lt.backward()
    ln.backward()
    for a, b in zip(args_n, args_t):
        close(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.random.seed(3)
    z = nm.reparameterize(ndl.zeros(4000, 3, dtype=ndl.float64) + 2.0, ndl.full((4000, 3), np.log(0.25)))
    assert z.shape == (4000, 3)
    assert abs(z.numpy().mean() - 2.0) < 0.03 and abs(z.numpy().std() - 0.5) < 0.02
