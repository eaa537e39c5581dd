"""makemore, as built in "Neural Networks: Zero to Hero" (Karpathy), part 3 "activations,
gradients, BatchNorm": build_dataset, the character MLP with an embedding table C, a
hand-written batch norm with running statistics, F.cross_entropy, the manual SGD update
`p.data += -lr * p.grad` after `p.grad = None`, split_loss and sampling with a Generator."""
from types import SimpleNamespace


def build(torch, nn, F) -> SimpleNamespace:

    def build_dataset(words, stoi, block_size):
        X, Y = [], []
        for w in words:
            context = [0] * block_size
            for ch in w + '.':
                ix = stoi[ch]
                X.append(context)
                Y.append(ix)
                context = context[1:] + [ix]
        X = torch.tensor(X)
        Y = torch.tensor(Y)
        return X, Y

    def init(vocab_size, n_embd, n_hidden, block_size, seed=2147483647):
        g = torch.Generator().manual_seed(seed)
        C = torch.randn((vocab_size, n_embd), generator=g)
        W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5 / 3) / ((n_embd * block_size) ** 0.5)
        b1 = torch.randn(n_hidden, generator=g) * 0.01
        W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.01
        b2 = torch.randn(vocab_size, generator=g) * 0
        bngain = torch.ones((1, n_hidden))
        bnbias = torch.zeros((1, n_hidden))
        bnmean_running = torch.zeros((1, n_hidden))
        bnstd_running = torch.ones((1, n_hidden))
        parameters = [C, W1, b1, W2, b2, bngain, bnbias]
        for p in parameters:
            p.requires_grad = True
        return dict(C=C, W1=W1, b1=b1, W2=W2, b2=b2, bngain=bngain, bnbias=bnbias,
                    bnmean_running=bnmean_running, bnstd_running=bnstd_running)

    def parameters(P):
        return [P[k] for k in ('C', 'W1', 'b1', 'W2', 'b2', 'bngain', 'bnbias')]

    def train_step(P, Xb, Yb, lr):
        """One iteration of the lecture's loop on the minibatch (Xb, Yb) (the lecture draws
        ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)); returns the loss and
        the lecture's lossi entry, loss.log10()."""
        C, W1, b1, W2, b2, bngain, bnbias = parameters(P)
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1 + b1
        bnmeani = hpreact.mean(0, keepdim=True)
        bnstdi = hpreact.std(0, keepdim=True)
        hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
        with torch.no_grad():
            P['bnmean_running'] = 0.999 * P['bnmean_running'] + 0.001 * bnmeani
            P['bnstd_running'] = 0.999 * P['bnstd_running'] + 0.001 * bnstdi
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Yb)
        for p in parameters(P):
            p.grad = None
        loss.backward()
        for p in parameters(P):
            p.data += -lr * p.grad
        return loss.item(), loss.log10().item()

    @torch.no_grad()
    def split_loss(P, x, y):
        emb = P['C'][x]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ P['W1'] + P['b1']
        hpreact = P['bngain'] * (hpreact - P['bnmean_running']) / P['bnstd_running'] + P['bnbias']
        h = torch.tanh(hpreact)
        logits = h @ P['W2'] + P['b2']
        loss = F.cross_entropy(logits, y)
        return loss.item()

    @torch.no_grad()
    def sample(P, block_size, itos, n, seed=2147483647 + 10, max_len=30):
        g = torch.Generator().manual_seed(seed)
        names = []
        for _ in range(n):
            out = []
            context = [0] * block_size
            while True:
                emb = P['C'][torch.tensor([context])]
                embcat = emb.view(emb.shape[0], -1)
                hpreact = embcat @ P['W1'] + P['b1']
                hpreact = P['bngain'] * (hpreact - P['bnmean_running']) / P['bnstd_running'] + P['bnbias']
                h = torch.tanh(hpreact)
                logits = h @ P['W2'] + P['b2']
                probs = F.softmax(logits, dim=1)
                ix = torch.multinomial(probs, num_samples=1, generator=g).item()
                context = context[1:] + [ix]
                out.append(ix)
                if ix == 0 or len(out) == max_len:  # port: max_len bounds an untrained model's names
                    break
            names.append(''.join(itos[i] for i in out))
        return names

    return SimpleNamespace(build_dataset=build_dataset, init=init, parameters=parameters, train_step=train_step,
                           split_loss=split_loss, sample=sample)
