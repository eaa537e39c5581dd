# %% [markdown]
# # 6. A small GPT on tiny Shakespeare
#
# `needle.models.GPT` is a GPT of nanoGPT's shape (Karpathy's nanoGPT, after GPT-2):
# token and position embeddings, a stack of Transformer blocks (causal self-attention and
# an MLP, each behind a LayerNorm and added back to its input), a final LayerNorm, and a
# head that shares its weights with the token embedding. This tutorial opens up the
# attention layer, checks the causal mask, trains a small model on Shakespeare for a few
# minutes and samples from it with a temperature and top-k.
#
# The model: [`python/needle/models/gpt.py`](../python/needle/models/gpt.py). The data:
# the whole tiny Shakespeare corpus (1.1 MB, the text nanoGPT's `shakespeare_char` trains
# on), shipped as `python/needle/data/text/tinyshakespeare_full.txt` (public domain; see the
# README there). The first 90% trains, the last 10% validates, as in nanoGPT.
# `NEEDLE_TUTORIAL_SMALL=1` trains a tiny model for a few steps.

# %%
import math
import os
import time

import numpy as np

import needle as ndl
from needle.data.datasets import shipped_path
from needle.models import GPT

SMALL = os.environ.get("NEEDLE_TUTORIAL_SMALL") == "1"
if SMALL:
    N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH, STEPS, LR = 1, 2, 32, 32, 16, 40, 3e-3
else:
    N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH, STEPS, LR = 2, 4, 64, 64, 16, 400, 4e-3
np.random.seed(0)

# %% [markdown]
# ## Data
#
# As in tutorial 5, characters are the tokens. nanoGPT draws each training batch from
# random places in the text: `BATCH` windows of `BLOCK` characters, and as targets the
# same windows shifted one character to the right. A GPT predicts at every position at
# once, so one window gives `BLOCK` training examples, each with a different amount of
# context.

# %%
with open(shipped_path("text/tinyshakespeare_full.txt"), encoding="utf-8") as f:
    text = f.read()
itos = sorted(set(text))
stoi = {c: i for i, c in enumerate(itos)}
data = np.array([stoi[c] for c in text], dtype=np.int64)
n = int(0.9 * len(data))
train_ids, val_ids = data[:n], data[n:]
print(f"{len(text):,} characters, {len(itos)} distinct; train {len(train_ids):,}, validation {len(val_ids):,}")


def get_batch(ids):
    starts = np.random.randint(0, len(ids) - BLOCK - 1, size=BATCH)
    x = np.stack([ids[s:s + BLOCK] for s in starts])
    y = np.stack([ids[s + 1:s + 1 + BLOCK] for s in starts])
    return ndl.Tensor(x, dtype="int64"), ndl.Tensor(y, dtype="int64")


# %% [markdown]
# ## The model
#
# `GPT(vocab_size, block_size, n_layer, n_head, n_embd)` takes nanoGPT's configuration
# fields; `model(idx, targets)` returns the logits (B, T, vocab) and the mean
# cross-entropy. Its parameters have nanoGPT's names, so `needle.interop` can move weights
# to and from PyTorch.

# %%
model = GPT(vocab_size=len(itos), block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD)
print(f"{model.num_parameters():,} parameters (without the position embeddings)")
for name, p in list(model.named_parameters())[:8]:
    print(f"  {name:34s} {tuple(p.shape)}")

# %% [markdown]
# ## Inside causal self-attention
#
# Each position's vector $x_t$ is projected (one Linear, `c_attn`) to a query $q_t$, a key
# $k_t$ and a value $v_t$, split into `n_head` heads of size $D$. Position $t$ scores every
# position $s$ by $q_t \cdot k_s / \sqrt{D}$, sets the scores of *later* positions
# ($s > t$) to $-\infty$ (the causal mask: no peeking at the characters it must predict),
# takes a softmax over $s$, and outputs the weighted average of the values. The heads are
# concatenated and projected back (`c_proj`).
#
# Below the same computation is written in numpy, from the layer's own weights, and
# compared with the layer. (The course's `Linear` stores its weight as (in, out), so
# $x W$; PyTorch's stores (out, in).)

# %%
attn = model.transformer["h"][0].attn
T = 8
x = np.random.randn(1, T, N_EMBD).astype(np.float64)
W, b = attn.c_attn.weight.numpy().astype(np.float64), attn.c_attn.bias.numpy().astype(np.float64)
q, k, v = np.split(x[0] @ W + b, 3, axis=1)                      # each (T, C)
D = N_EMBD // N_HEAD
heads = []
for h in range(N_HEAD):
    qh, kh, vh = (m[:, h * D:(h + 1) * D] for m in (q, k, v))
    scores = qh @ kh.T / math.sqrt(D)                             # (T, T)
    scores[np.triu_indices(T, 1)] = -np.inf                       # the causal mask
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    heads.append(weights @ vh)
by_hand = np.concatenate(heads, axis=1) @ attn.c_proj.weight.numpy() + attn.c_proj.bias.numpy()
model.eval()
with ndl.no_grad():
    ours = attn(ndl.Tensor(x, dtype="float32")).numpy()[0]
print("largest |layer - numpy| over the attention output:", np.abs(ours - by_hand).max())
assert np.allclose(ours, by_hand, atol=1e-5)

# %% [markdown]
# The mask means the prediction at position $t$ depends only on tokens $0..t$. Changing
# the last token of a sequence must leave the logits of every earlier position unchanged:

# %%
idx = np.random.randint(0, len(itos), size=(1, T))
changed = idx.copy()
changed[0, -1] = (changed[0, -1] + 1) % len(itos)
with ndl.no_grad():
    a, _ = model(ndl.Tensor(idx, dtype="int64"))
    c, _ = model(ndl.Tensor(changed, dtype="int64"))
diff = np.abs(a.numpy() - c.numpy()).max(axis=2)[0]
print("largest logit change per position:", diff.round(6))
assert np.all(diff[:-1] == 0) and diff[-1] > 0

# %% [markdown]
# ## Training
#
# nanoGPT trains with AdamW (Adam with *decoupled* weight decay) in two groups: decay on
# the weight matrices and embeddings, none on the biases and LayerNorm gains;
# `model.configure_optimizers` builds exactly that. The step is compiled with `ndl.compile`
# (see tutorial 3): after two calls, each step replays a recorded program of kernels.
#
# Before training, the loss is about $\log 65 \approx 4.17$: uniform guessing.

# %%
opt = model.configure_optimizers(weight_decay=0.1, learning_rate=LR, betas=(0.9, 0.99))


@ndl.compile
def train_step(x, y):
    opt.reset_grad()
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    return loss


def estimate_loss(ids, batches):
    model.eval()
    with ndl.no_grad():
        losses = [float(model(*get_batch(ids))[1].numpy()) for _ in range(batches)]
    model.train()
    return float(np.mean(losses))


eval_batches = 4 if SMALL else 20
start_val = estimate_loss(val_ids, eval_batches)
print(f"validation loss before training: {start_val:.3f} (log 65 = {math.log(len(itos)):.3f})")
model.train()
losses, start = [], time.time()
for step in range(STEPS):
    losses.append(float(train_step(*get_batch(train_ids)).numpy()))
    if step % 25 == 0 or step == STEPS - 1:
        print(f"  step {step:4d}: train loss {np.mean(losses[-25:]):.3f}  ({time.time() - start:.0f} s)")
val_loss = estimate_loss(val_ids, eval_batches)
print(f"validation loss after {STEPS} steps: {val_loss:.3f}")

# %% [markdown]
# For scale: nanoGPT's `shakespeare_char` configuration (6 layers, 384 wide, 5,000 steps
# on a GPU) reaches a validation loss near 1.47. This model is a hundred times smaller
# and trains for a few minutes on a CPU: expect about 2.3 (a model that only knew how
# often each character follows another, a bigram model, gets about 2.5).

# %% [markdown]
# ## Sampling with temperature and top-k
#
# `model.generate(idx, n, temperature, top_k)` extends a prompt one token at a time: it
# runs the model on the last `block_size` tokens, divides the last position's logits by
# the temperature, keeps only the `top_k` largest (the rest get probability 0) and draws
# from the softmax. Top-k cuts off the long tail of unlikely characters that makes
# samples at temperature 1 stumble; `top_k=1` always picks the most likely character
# (greedy decoding), which soon falls into a loop.

# %%
prompt = ndl.Tensor(np.array([[stoi[c] for c in "ROMEO:\n"]]), dtype="int64")
length = 40 if SMALL else 200
for temperature, top_k in ((1.0, None), (0.8, 10), (1.0, 1)):
    # each new character runs the whole model once, so sampling takes a while on a CPU
    out = model.generate(prompt, length if top_k != 1 else length // 2, temperature=temperature, top_k=top_k)
    print(f"--- temperature {temperature}, top_k {top_k} ---")
    print("".join(itos[i] for i in out.numpy()[0]))

# %% [markdown]
# ## Sanity checks

# %%
print(f"train loss: first 10 steps {np.mean(losses[:10]):.3f}, last 10 steps {np.mean(losses[-10:]):.3f}; "
      f"validation {start_val:.3f} -> {val_loss:.3f}")
assert np.mean(losses[-10:]) < np.mean(losses[:10])
assert val_loss < start_val - (0.5 if SMALL else 1.2), (start_val, val_loss)
print("tutorial 06 done")
