"""PyTorch's examples/vae/main.py: the VAE (fc1, fc21, fc22, fc3, fc4; reparameterize with
torch.randn_like), loss_function (binary_cross_entropy(reduction='sum') + the KL divergence)
and the train loop with Adam(lr=1e-3). The layer sizes are arguments (the example's are 784,
400, 20)."""
from types import SimpleNamespace


def build(torch, nn, F) -> SimpleNamespace:
    optim = torch.optim

    class VAE(nn.Module):
        def __init__(self, n_in=784, n_hidden=400, n_latent=20):
            super(VAE, self).__init__()
            self.n_in = n_in
            self.fc1 = nn.Linear(n_in, n_hidden)
            self.fc21 = nn.Linear(n_hidden, n_latent)
            self.fc22 = nn.Linear(n_hidden, n_latent)
            self.fc3 = nn.Linear(n_latent, n_hidden)
            self.fc4 = nn.Linear(n_hidden, n_in)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, self.n_in))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar, n_in=784):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, n_in), reduction='sum')
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    def train(model, train_loader, optimizer, device="cpu"):
        """One epoch of the example's train(); returns the per-batch losses."""
        model.train()
        losses = []
        for batch_idx, (data, _) in enumerate(train_loader):  # noqa: B007 (the original's names)
            data = data.to(device)
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar, model.n_in)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    def make_optimizer(model):
        return optim.Adam(model.parameters(), lr=1e-3)

    return SimpleNamespace(VAE=VAE, loss_function=loss_function, train=train, make_optimizer=make_optimizer)
