# %% [markdown]
# # 5. A character-level LSTM language model on tiny Shakespeare
#
# A language model predicts the next token from the ones before it. Here the tokens are
# single characters, and the model reads Shakespeare one character at a time, carrying a
# memory (the LSTM's state) from one step to the next. Once trained, it writes new text
# by sampling one character at a time and feeding each back in.
#
# Data: `tinyshakespeare.txt`, the first 2,000 lines (53 KB) of Karpathy's tiny Shakespeare
# corpus, shipped with needle in `python/needle/data/text/` (public domain; see the README
# there). The first 90% trains, the last 10% validates. `NEEDLE_TUTORIAL_SMALL=1` trains a
# smaller model for fewer steps.

# %%
import os
import time

import numpy as np

import needle as ndl
from needle import nn, optim
from needle.data.datasets import batchify, get_batch, shipped_path

SMALL = os.environ.get("NEEDLE_TUTORIAL_SMALL") == "1"
EMBED, HIDDEN = (16, 48) if SMALL else (32, 128)
BATCH, BPTT = (16, 16) if SMALL else (32, 32)
STEPS = 25 if SMALL else 150
LR = 0.01 if SMALL else 0.005
np.random.seed(0)

# %% [markdown]
# ## Characters to integers
#
# The vocabulary is every distinct character of the text, sorted; `stoi` maps a character
# to its id and `itos` back.

# %%
with open(shipped_path("text/tinyshakespeare.txt"), encoding="utf-8") as f:
    text = f.read()
itos = sorted(set(text))
stoi = {c: i for i, c in enumerate(itos)}
ids = np.array([stoi[c] for c in text], dtype=np.int64)
split = int(0.9 * len(ids))
print(f"{len(text):,} characters, vocabulary of {len(itos)}: {''.join(itos)!r}")
print(text[:120])

# %% [markdown]
# ## Batches for truncated backpropagation through time
#
# `batchify` (the course's, in
# [`python/needle/data/datasets/ptb_dataset.py`](../python/needle/data/datasets/ptb_dataset.py))
# cuts the text into `BATCH` long columns, one per sequence of the batch: column j is one
# contiguous stretch of text. `get_batch(data, i, BPTT)` takes rows i .. i+BPTT-1 as input,
# (BPTT, BATCH), and the same rows shifted by one, flattened, as targets: at every position
# the target is the next character.
#
# Training walks down the columns chunk by chunk. The LSTM's state at the end of a chunk is
# the start state of the next one, so the model can remember beyond BPTT characters, but
# gradients stop at the chunk border (`detach()`): that is *truncated* backpropagation
# through time, which keeps each step's graph (and memory) BPTT steps long.

# %%
train_data = batchify(ids[:split], BATCH)
val_data = batchify(ids[split:], BATCH)
print("train columns:", train_data.shape, "validation columns:", val_data.shape)
x, y = get_batch(train_data, 0, BPTT, dtype="int64")
print("input", x.shape, "targets", y.shape)
print("column 0 reads:  ", repr("".join(itos[i] for i in x.numpy()[:, 0])))
print("and must predict:", repr("".join(itos[i] for i in y.numpy().reshape(-1, BATCH)[:, 0])))

# %% [markdown]
# ## The model
#
# Embedding -> LSTM -> Linear. The LSTM cell
# ([`python/needle/nn/nn_sequence.py`](../python/needle/nn/nn_sequence.py), `LSTMCell`)
# computes from the input $x_t$ and the previous state $(h, c)$ four gates in one matrix
# product, $z = x_t W_{ih} + h W_{hh} + b$, split into
#
# * $i = \sigma(z_i)$, how much new information to write,
# * $f = \sigma(z_f)$, how much of the old memory to keep,
# * $g = \tanh(z_g)$, the candidate to write,
# * $o = \sigma(z_o)$, how much of the memory to show,
#
# and then $c' = f \odot c + i \odot g$, $h' = o \odot \tanh(c')$. Because $c$ is carried
# forward by a product with $f$ rather than by a matrix, gradients flow back through many
# steps without vanishing as quickly as in a plain RNN.
#
# needle's `models.LanguageModel` is the course's version of this model (it also offers
# an RNN or a Transformer as the sequence model); here it is written out, to show how a
# module is defined: parameters and submodules are attributes, `forward` computes.

# %%
class CharLSTM(nn.Module):
    def __init__(self, vocab_size, embed, hidden):
        super().__init__()
        self.hidden = hidden
        self.embedding = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):
        """x (T, B) character ids -> logits (T * B, vocab_size) and the final (h, c)."""
        T, B = x.shape
        out, state = self.lstm(self.embedding(x), state)   # out: (T, B, hidden)
        return self.head(out.reshape((T * B, self.hidden))), state


model = CharLSTM(len(itos), EMBED, HIDDEN)
print("parameters:", sum(int(np.prod(p.shape)) for p in model.parameters()))

# %% [markdown]
# ## Training
#
# Before training, the model guesses uniformly: a loss of $\log V$ (about 4.1 nats for 59
# characters). Adam with gradient clipping (`nn.utils.clip_grad_norm_`, as for most
# recurrent nets) brings it down.

# %%
def evaluate(model, data):
    model.eval()
    total, count, state = 0.0, 0, None
    loss_fn = nn.SoftmaxLoss()
    with ndl.no_grad():
        for i in range(0, data.shape[0] - 1, BPTT):
            x, y = get_batch(data, i, BPTT, dtype="int64")
            logits, state = model(x, state)
            total += float(loss_fn(logits, y).numpy()) * y.shape[0]
            count += y.shape[0]
    return total / count


opt = optim.Adam(model.parameters(), lr=LR)
loss_fn = nn.SoftmaxLoss()
start_val = evaluate(model, val_data)
print(f"validation loss before training: {start_val:.3f} (log V = {np.log(len(itos)):.3f})")

losses, state, i, start = [], None, 0, time.time()
for step in range(STEPS):
    if i >= train_data.shape[0] - 1:
        i, state = 0, None      # a new pass over the text starts from an empty memory
    model.train()
    x, y = get_batch(train_data, i, BPTT, dtype="int64")
    opt.reset_grad()
    logits, state = model(x, state)
    loss = loss_fn(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    state = (state[0].detach(), state[1].detach())  # keep the memory, cut the gradient
    losses.append(float(loss.numpy()))
    i += BPTT
    if step % 10 == 0 or step == STEPS - 1:
        print(f"  step {step:4d}: loss {np.mean(losses[-10:]):.3f}  ({time.time() - start:.0f} s)")

val_loss = evaluate(model, val_data)
print(f"validation loss after {STEPS} steps: {val_loss:.3f}")

# %% [markdown]
# ## Sampling
#
# To generate, feed a prompt, then repeatedly: take the logits of the last position,
# divide them by a *temperature* $T$, turn them into probabilities with a softmax, draw
# one character, and feed it back in with the state. $T < 1$ sharpens the distribution
# (safer, more repetitive text), $T > 1$ flattens it (more surprising, more mistakes).

# %%
def sample(model, prompt, length, temperature=1.0):
    model.eval()
    out = list(prompt)
    with ndl.no_grad():
        x = ndl.Tensor(np.array([[stoi[c]] for c in prompt]), dtype="int64")   # (T, 1)
        logits, state = model(x)
        for _ in range(length):
            last = logits.numpy()[-1] / temperature
            p = np.exp(last - last.max())
            p /= p.sum()
            nxt = int(np.random.choice(len(p), p=p))
            out.append(itos[nxt])
            logits, state = model(ndl.Tensor(np.array([[nxt]]), dtype="int64"), state)
    return "".join(out)


for temperature in (0.5, 1.0):
    print(f"--- temperature {temperature} ---")
    print(sample(model, "ROMEO:\n", 80 if SMALL else 300, temperature))

# %% [markdown]
# After a few minutes of training the samples have Shakespeare's layout (names in
# capitals followed by a colon, short lines) and common words, but little sense: a model
# this small, trained on 53 KB for a few hundred steps, learns spelling before grammar.
# Tutorial 6 trains a small GPT on the same text.
#
# ## Sanity checks

# %%
print(f"train loss: first 10 steps {np.mean(losses[:10]):.3f}, last 10 steps {np.mean(losses[-10:]):.3f}; "
      f"validation {start_val:.3f} -> {val_loss:.3f}")
assert np.mean(losses[-10:]) < np.mean(losses[:10])
assert val_loss < start_val - (0.3 if SMALL else 1.0), (start_val, val_loss)
print("tutorial 05 done")
