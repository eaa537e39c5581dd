"""needle.models.GPT against a PyTorch twin of nanoGPT's GPT (written here, the same
architecture and module names), through needle.interop both ways: logits, loss and every
gradient; weight tying; the optimizer groups; generation."""
import math

import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF

import needle as ndl
from needle import interop
from needle.models import GPT

CONFIG = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


class TorchBlock(tnn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = tnn.LayerNorm(n_embd, bias=bias)
        self.attn = tnn.Module()
        self.attn.c_attn = tnn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.attn.c_proj = tnn.Linear(n_embd, n_embd, bias=bias)
        self.ln_2 = tnn.LayerNorm(n_embd, bias=bias)
        self.mlp = tnn.Module()
        self.mlp.c_fc = tnn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.mlp.c_proj = tnn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp.c_proj(TF.gelu(self.mlp.c_fc(self.ln_2(x))))


class TorchGPT(tnn.Module):
    """nanoGPT's module tree and forward (without dropout), for the comparison."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, bias=True):
        super().__init__()
        self.transformer = tnn.ModuleDict(dict(
            wte=tnn.Embedding(vocab_size, n_embd), wpe=tnn.Embedding(block_size, n_embd),
            h=tnn.ModuleList([TorchBlock(n_embd, n_head, bias) for _ in range(n_layer)]),
            ln_f=tnn.LayerNorm(n_embd, bias=bias)))
        self.lm_head = tnn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as nanoGPT does

    def forward(self, idx, targets):
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1]))
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))
        return logits, TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def twins(bias=True, dtype="float64"):
    np.random.seed(0)
    model = GPT(**CONFIG, bias=bias, dtype=dtype)
    twin = TorchGPT(**CONFIG, bias=bias).double() if dtype == "float64" else TorchGPT(**CONFIG, bias=bias)
    interop.to_torch(model, twin)  # strict load: every key of nanoGPT's tree, nothing more
    return model, twin


def batch(seed=1, B=3, T=8):
    r = np.random.RandomState(seed)
    return r.randint(0, CONFIG["vocab_size"], (B, T)), r.randint(0, CONFIG["vocab_size"], (B, T))


@pytest.mark.parametrize("bias", [True, False])
def test_logits_loss_and_every_gradient_match_a_pytorch_twin(bias):
    model, twin = twins(bias)
    x, y = batch()
    logits, loss = model(ndl.Tensor(x, dtype="int64"), ndl.Tensor(y, dtype="int64"))
    t_logits, t_loss = twin(torch.tensor(x), torch.tensor(y))
    np.testing.assert_allclose(logits.numpy(), t_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.numpy(), t_loss.item(), rtol=1e-12)
    loss.backward()
    t_loss.backward()
    needle_grads = {key: forward([t.grad.numpy() for t in tensors])
                    for key, tensors, forward, _ in interop._pairs(model)}
    for name, p in twin.named_parameters():
        np.testing.assert_allclose(needle_grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_float32_logits_agree_within_1e5_both_ways():
    np.random.seed(3)
    model = GPT(**CONFIG)
    twin = TorchGPT(**CONFIG)
    interop.to_torch(model, twin)
    x, y = batch(2)
    logits = model(ndl.Tensor(x, dtype="int64"))[0].numpy()
    np.testing.assert_allclose(logits, twin(torch.tensor(x), torch.tensor(y))[0].detach().numpy(), atol=1e-5)
    # and the other way: torch's weights into a fresh needle GPT, through torch.compile's prefix too
    torch.manual_seed(0)
    other = TorchGPT(**CONFIG)
    fresh = GPT(**CONFIG)
    interop.from_torch(fresh, {"_orig_mod." + k: v for k, v in other.state_dict().items()})
    np.testing.assert_allclose(fresh(ndl.Tensor(x, dtype="int64"))[0].numpy(),
                               other(torch.tensor(x), torch.tensor(y))[0].detach().numpy(), atol=1e-5)


def test_the_head_is_the_token_embedding():
    model, _ = twins()
    wte = model.transformer["wte"].weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and sum(p is wte for p in model.parameters()) == 1
    assert model.num_parameters(non_embedding=False) == sum(int(np.prod(p.shape)) for p in model.parameters())
    state = interop.to_torch(model)
    assert torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="'lm_head.weight' and 'transformer.wte.weight' differ"):
        interop.from_torch(model, state)


def test_configure_optimizers_decays_matrices_and_embeddings_only():
    model, _ = twins()
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.99))
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith("bias") and ".ln_" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in decay["params"]} >= {"transformer.wte.weight", "transformer.wpe.weight",
                                                       "transformer.h.0.attn.c_attn.weight"}
    assert all(names[id(p)].endswith("bias") or "ln_" in names[id(p)] for p in no_decay["params"])
    assert opt.beta2 == 0.99 and opt.lr == 1e-3


def test_gpt2_init_scales_the_residual_projections():
    np.random.seed(0)
    model = GPT(vocab_size=50, block_size=64, n_layer=8, n_head=4, n_embd=256)
    block = model.transformer["h"][0]
    assert abs(block.attn.c_attn.weight.numpy().std() - 0.02) < 0.001
    assert abs(block.mlp.c_proj.weight.numpy().std() - 0.02 / math.sqrt(16)) < 0.0005
    assert abs(block.attn.c_proj.weight.numpy().std() - 0.02 / math.sqrt(16)) < 0.0005
    assert np.all(block.attn.c_attn.bias.numpy() == 0)


def test_generate_is_greedy_with_top_k_1_and_reproducible_with_a_seed():
    model, twin = twins(dtype="float32")
    prompt = ndl.Tensor(np.array([[1, 2, 3]]), dtype="int64")
    greedy = model.generate(prompt, 12, top_k=1).numpy()
    # greedy by hand in torch (crop to block_size as generate does)
    tokens = [1, 2, 3]
    with torch.no_grad():
        for _ in range(12):
            ctx = torch.tensor([tokens[-CONFIG["block_size"]:]])
            logits = twin(ctx, ctx)[0][0, -1]
            tokens.append(int(logits.argmax()))
    assert greedy.tolist() == [tokens]
    np.random.seed(5)
    a = model.generate(prompt, 20, temperature=0.8, top_k=5).numpy()
    np.random.seed(5)
    b = model.generate(prompt, 20, temperature=0.8, top_k=5).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 23) and model.training


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_embd=10, n_head=3), "n_embd \\(10\\) must be divisible by n_head \\(3\\)"),
    (dict(block_size=0), "block_size must be an integer >= 1"),
    (dict(dropout=1.0), "dropout must be in \\[0, 1\\)"),
])
def test_bad_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPT(**{**CONFIG, **kwargs})


def test_bad_calls_are_refused():
    model, _ = twins(dtype="float32")
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(ndl.Tensor(np.zeros((1, 9)), dtype="int64"))
    prompt = ndl.Tensor(np.array([[1]]), dtype="int64")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.generate(prompt, 3, temperature=0)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        model.generate(prompt, 3, top_k=0)


def test_a_compiled_training_step_equals_the_eager_one():
    def run(compiled):
        np.random.seed(0)
        model = GPT(**CONFIG, dropout=0.1)
        opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.99))

        def step(x, y):
            opt.reset_grad()
            loss = model(x, y)[1]
            loss.backward()
            opt.step()
            return loss

        step = ndl.compile(step) if compiled else step
        x, y = (ndl.Tensor(a, dtype="int64") for a in batch(4))
        np.random.seed(1)
        return [float(step(x, y).numpy()) for _ in range(5)], model.transformer["wte"].weight.numpy()

    (eager, w_eager), (compiled, w_compiled) = run(False), run(True)
    assert eager == compiled
    np.testing.assert_array_equal(w_eager, w_compiled)
    assert eager[-1] < eager[0]


def test_moving_the_model_moves_its_mask_and_positions():
    model, _ = twins(dtype="float32")
    x = np.array([[1, 2, 3, 4]])
    on_cpu = model(ndl.Tensor(x, dtype="int64"))[0].numpy()
    model.to(ndl.cpu_numpy())
    moved = model(ndl.Tensor(x, dtype="int64", device=ndl.cpu_numpy()))[0]
    assert moved.device == ndl.cpu_numpy()
    np.testing.assert_allclose(moved.numpy(), on_cpu, rtol=1e-5, atol=1e-6)
