"""PyTorch's examples/dcgan/main.py: weights_init (applied by class name, normal_ / zeros_), the
Generator (ConvTranspose2d, BatchNorm2d, ReLU(True), Tanh) and the Discriminator (Conv2d,
LeakyReLU(0.2, inplace=True), BatchNorm2d, Sigmoid) in nn.Sequential, BCELoss, Adam with
betas, and one iteration of the training loop (label = torch.full, label.fill_, fake.detach(),
errD_real and errD_fake backward into the same gradients). The 64x64 structure is the
example's; the channel counts are arguments."""
from types import SimpleNamespace

from . import is_needle


def build(torch, nn, F) -> SimpleNamespace:
    NEEDLE = is_needle(torch)
    optim = torch.optim

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            torch.nn.init.normal_(m.weight, 1.0, 0.02)
            torch.nn.init.zeros_(m.bias)

    class Generator(nn.Module):
        def __init__(self, nz, ngf, nc):
            super(Generator, self).__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 8),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                nn.Tanh()
            )
            if NEEDLE:  # DIFF: needle's BatchNorm keeps the course's biased running variance unless asked
                for m in self.main:
                    if isinstance(m, nn.BatchNorm2d):
                        m.unbiased_running_var = True

        def forward(self, input):
            output = self.main(input)
            return output

    class Discriminator(nn.Module):
        def __init__(self, ndf, nc):
            super(Discriminator, self).__init__()
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 4),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
                nn.Sigmoid()
            )
            if NEEDLE:  # DIFF: as in the Generator, PyTorch's unbiased running variance
                for m in self.main:
                    if isinstance(m, nn.BatchNorm2d):
                        m.unbiased_running_var = True

        def forward(self, input):
            output = self.main(input)
            return output.view(-1, 1).squeeze(1)

    def optimizers(netD, netG, lr=0.0002, beta1=0.5):
        optimizerD = optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
        optimizerG = optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))
        return optimizerD, optimizerG

    def train_step(netD, netG, optimizerD, optimizerG, data, nz, device="cpu"):
        """One iteration of the example's loop on the batch `data` ((images, labels) as a loader
        gives it); the noise is the example's torch.randn(batch_size, nz, 1, 1, device=device).
        Returns errD, errG, D_x, D_G_z1, D_G_z2 as floats."""
        criterion = nn.BCELoss()
        real_label = 1
        fake_label = 0
        ############################
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        ###########################
        # train with real
        netD.zero_grad()
        real_cpu = data[0].to(device)
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        # train with fake
        noise = torch.randn(batch_size, nz, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        if NEEDLE:  # DIFF: needle's backward() overwrites .grad (the course's rule); accumulate=True adds
            errD_fake.backward(accumulate=True)
        else:
            errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()
        ############################
        # (2) Update G network: maximize log(D(G(z)))
        ###########################
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()
        return errD.item(), errG.item(), D_x, D_G_z1, D_G_z2

    return SimpleNamespace(weights_init=weights_init, Generator=Generator, Discriminator=Discriminator,
                           optimizers=optimizers, train_step=train_step)
