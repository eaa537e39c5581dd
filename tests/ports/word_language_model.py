"""PyTorch's examples/word_language_model: model.py's RNNModel (Embedding, Dropout, nn.LSTM /
nn.GRU / nn.RNN with dropout= between layers, Linear decoder, init_weights with uniform_ and
zeros_, init_hidden with next(parameters()).new_zeros) and main.py's batchify (narrow, view,
t, contiguous), get_batch, repackage_hidden (detach) and train (zero_grad, NLLLoss,
clip_grad_norm_, the manual update p.data.add_(p.grad, alpha=-lr))."""
from types import SimpleNamespace


def build(torch, nn, F) -> SimpleNamespace:

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super(RNNModel, self).__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ['LSTM', 'GRU']:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                try:
                    nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
                except KeyError as e:
                    raise ValueError("An invalid option for `--model` was supplied, "
                                     "options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']") from e
                self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                if nhid != ninp:
                    raise ValueError('When using the tied flag, nhid must be equal to emsize')
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.nhid = nhid
            self.nlayers = nlayers

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output)
            decoded = decoded.view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == 'LSTM':
                return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                        weight.new_zeros(self.nlayers, bsz, self.nhid))
            else:
                return weight.new_zeros(self.nlayers, bsz, self.nhid)

    def batchify(data, bsz, device="cpu"):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data.to(device)

    def repackage_hidden(h):
        """Wraps hidden states in new Tensors, to detach them from their history."""
        if isinstance(h, torch.Tensor):
            return h.detach()
        else:
            return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i, bptt):
        seq_len = min(bptt, len(source) - 1 - i)
        data = source[i:i + seq_len]
        target = source[i + 1:i + 1 + seq_len].view(-1)
        return data, target

    def train(model, train_data, batch_size, bptt, lr, clip, after_batch=None):
        """main.py's train() for one epoch; returns the losses. after_batch(model), if given,
        runs after each update (a test's look at the parameters)."""
        criterion = nn.NLLLoss()
        model.train()
        hidden = model.init_hidden(batch_size)
        losses = []
        for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):  # noqa: B007 (the original's names)
            data, targets = get_batch(train_data, i, bptt)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
            if after_batch is not None:
                after_batch(model)
        return losses

    return SimpleNamespace(RNNModel=RNNModel, batchify=batchify, repackage_hidden=repackage_hidden,
                           get_batch=get_batch, train=train)
