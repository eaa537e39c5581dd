"""PyTorch's examples/mnist/main.py: Net (Conv2d, ReLU, max_pool2d, Dropout, flatten, Linear,
log_softmax), train (zero_grad, nll_loss, backward, step) and test (nll_loss(reduction='sum'),
argmax, eq, view_as) over DataLoaders, Adadelta with StepLR. Tiny sizes: `channels`, `hidden`
and the image side are arguments (the example's are 32, 64, 128, 28)."""
from types import SimpleNamespace


def build(torch, nn, F) -> SimpleNamespace:
    optim = torch.optim
    StepLR = torch.optim.lr_scheduler.StepLR

    class Net(nn.Module):
        def __init__(self, channels=(32, 64), hidden=128, side=28, dropout=(0.25, 0.5)):
            super().__init__()
            self.conv1 = nn.Conv2d(1, channels[0], 3, 1)
            self.conv2 = nn.Conv2d(channels[0], channels[1], 3, 1)
            self.dropout1 = nn.Dropout(dropout[0])
            self.dropout2 = nn.Dropout(dropout[1])
            self.fc1 = nn.Linear(channels[1] * ((side - 4) // 2) ** 2, hidden)
            self.fc2 = nn.Linear(hidden, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    def train(model, device, train_loader, optimizer, epoch):
        model.train()
        losses = []
        for batch_idx, (data, target) in enumerate(train_loader):  # noqa: B007 (the original's names)
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    def test(model, device, test_loader):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        return test_loss, correct

    def main(model, images, labels, epochs=2, lr=1.0, gamma=0.7, batch_size=4, device="cpu"):
        """main()'s training: loaders over a TensorDataset (the example's datasets.MNIST), Adadelta
        and StepLR; returns (train losses, test results per epoch, the learning rates)."""
        dataset = torch.utils.data.TensorDataset(images, labels)
        train_loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        test_loader = torch.utils.data.DataLoader(dataset, batch_size=2 * batch_size)
        optimizer = optim.Adadelta(model.parameters(), lr=lr)
        scheduler = StepLR(optimizer, step_size=1, gamma=gamma)
        losses, results, lrs = [], [], []
        for epoch in range(1, epochs + 1):
            losses += train(model, device, train_loader, optimizer, epoch)
            results.append(test(model, device, test_loader))
            scheduler.step()
            lrs.append(optimizer.param_groups[0]['lr'])
        return losses, results, lrs

    return SimpleNamespace(Net=Net, train=train, test=test, main=main)
