"""Training recipes for `needle train`: each builds a model and its data as a Task.

A Task knows how to run one training epoch and one evaluation; the trainer
(`needle.train.loop.fit`) does the rest (progress, checkpoints, history).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Optional

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..data import DataLoader, NDArrayDataset
from ..data.toy_datasets import TOY_DATASETS
from ..models import MLP, LanguageModel, MLPResNet, ResNet9, SmallCNN
from .epoch import EpochStats, classification_epoch, language_model_epoch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# the whole corpus, for the gpt recipe (nanoGPT's shakespeare_char)
TINY_SHAKESPEARE_FULL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "text",
                                     "tinyshakespeare_full.txt")
# shipped inside the package, so the default does not depend on the current directory
TINY_SHAKESPEARE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "text",
                                "tinyshakespeare.txt")


@dataclass
class ClassificationTask:
    model: nn.Module
    train_loader: DataLoader
    test_loader: DataLoader
    description: str
    loss_fn: nn.Module = field(default_factory=nn.SoftmaxLoss)
    compiled: bool = True  # steps through ndl.compile (with fused elementwise kernels)

    @property
    def train_batches(self) -> int:
        return len(self.train_loader.ordering)

    def train_epoch(self, opt, on_batch: Optional[Callable[[EpochStats], None]] = None) -> EpochStats:
        return classification_epoch(self.train_loader, self.model, self.loss_fn, opt, on_batch=on_batch,
                                    compiled=self.compiled, fuse=True)

    def evaluate(self) -> EpochStats:
        return classification_epoch(self.test_loader, self.model, self.loss_fn, compiled=self.compiled, fuse=True)


@dataclass
class LanguageModelTask:
    model: LanguageModel
    train_data: np.ndarray
    test_data: np.ndarray
    seq_len: int
    description: str
    vocabulary: list
    device: Any = None
    clip: Optional[float] = None
    loss_fn: nn.Module = field(default_factory=nn.SoftmaxLoss)
    compiled: bool = True

    @property
    def train_batches(self) -> int:
        return len(range(0, self.train_data.shape[0] - 1, self.seq_len))

    def train_epoch(self, opt, on_batch=None) -> EpochStats:
        return language_model_epoch(self.train_data, self.model, self.seq_len, self.loss_fn, opt, self.clip,
                                    self.device, on_batch=on_batch, compiled=self.compiled, fuse=True)

    def evaluate(self) -> EpochStats:
        return language_model_epoch(self.test_data, self.model, self.seq_len, self.loss_fn, device=self.device,
                                    compiled=self.compiled, fuse=True)

    def checkpoint_info(self) -> Dict[str, Any]:
        """What `needle sample` needs besides the weights."""
        return {"vocabulary": list(self.vocabulary)}

    def sample(self, length: int, seed: int = 0, temperature: float = 1.0) -> str:
        """Generate `length` tokens from the model, starting after the first training token."""
        rng = np.random.RandomState(seed)
        self.model.eval()
        tokens = [int(self.train_data[0, 0])]
        recurrent = not isinstance(self.model.seq_model, nn.Transformer)
        h = None
        with no_grad():
            for _ in range(length):
                context = tokens[-1:] if recurrent else tokens[-self.seq_len:]
                x = Tensor(np.array(context, dtype=np.float32)[:, None], device=self.device, requires_grad=False)
                logits, state = self.model(x, h)
                if recurrent:
                    h = state
                z = logits.numpy()[-1].astype(np.float64) / temperature
                p = np.exp(z - z.max())
                tokens.append(int(rng.choice(len(p), p=p / p.sum())))
        sep = "" if all(len(w) == 1 for w in self.vocabulary) else " "
        return sep.join(self.vocabulary[t] for t in tokens)


def _subset(X: np.ndarray, y: np.ndarray, limit: Optional[int]):
    return (X, y) if not limit else (X[:limit], y[:limit])


def _loaders(train, test, batch_size, device, limit=None):
    Xtr, ytr = _subset(*train, limit)
    Xte, yte = _subset(*test, limit)
    return (DataLoader(NDArrayDataset(Xtr, ytr), batch_size, shuffle=True, device=device),
            DataLoader(NDArrayDataset(Xte, yte), batch_size, device=device))


def toy(args) -> ClassificationTask:
    """An MLP on a 2-D set generated in code (no files): the default recipe."""
    make = TOY_DATASETS[args.dataset]
    extra = {"classes": args.classes} if args.dataset == "spiral" else {}
    train = make(args.samples, seed=args.seed, **extra)
    test = make(max(args.samples // 4, 1), seed=args.seed + 1, **extra)
    classes = int(max(train[1].max(), test[1].max())) + 1
    mean, std = train[0].mean(axis=0), train[0].std(axis=0) + 1e-6  # the sets live in [0, 1]^2
    train, test = ((train[0] - mean) / std, train[1]), ((test[0] - mean) / std, test[1])
    model = MLP(2, [args.hidden, args.hidden], classes, device=args.device)
    train_loader, test_loader = _loaders(train, test, args.batch_size, args.device)
    return ClassificationTask(model, train_loader, test_loader,
                              f"MLP(2, [{args.hidden}, {args.hidden}], {classes}) on '{args.dataset}'")


def _idx_split(data_dir: str, split: str):
    from ..data import MNISTDataset

    prefix = "train" if split == "train" else "t10k"
    dataset = MNISTDataset(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"),
                           os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    return dataset.X, dataset.y


def mlp(args) -> ClassificationTask:
    """The course's MLPResNet on MNIST-format data (Fashion-MNIST by default)."""
    data_dir = args.data
    train, test = _idx_split(data_dir, "train"), _idx_split(data_dir, "test")
    model = MLPResNet(784, args.hidden, num_blocks=args.blocks, num_classes=10, drop_prob=args.dropout,
                      device=args.device)
    train_loader, test_loader = _loaders(train, test, args.batch_size, args.device, args.limit)
    return ClassificationTask(model, train_loader, test_loader,
                              f"MLPResNet(784, {args.hidden}, blocks={args.blocks}) on {data_dir}")


def cnn(args) -> ClassificationTask:
    """A small CNN (needle.models.SmallCNN) on 28x28 MNIST-format images (Fashion-MNIST by default)."""
    data_dir = args.data
    (Xtr, ytr), (Xte, yte) = _idx_split(data_dir, "train"), _idx_split(data_dir, "test")
    train, test = (Xtr.reshape(-1, 1, 28, 28), ytr), (Xte.reshape(-1, 1, 28, 28), yte)
    model = SmallCNN(1, 10, 28, device=args.device)
    train_loader, test_loader = _loaders(train, test, args.batch_size, args.device, args.limit)
    return ClassificationTask(model, train_loader, test_loader, f"SmallCNN on {data_dir}")


def _padded_images(X: np.ndarray) -> np.ndarray:
    """(N, 784) 28x28 images -> (N, 1, 32, 32), zero-padded by 2 on each side."""
    return np.pad(X.reshape(-1, 1, 28, 28), ((0, 0), (0, 0), (2, 2), (2, 2)))


def resnet9(args) -> ClassificationTask:
    """ResNet9 on CIFAR-10 (a cifar-10-batches-py folder) or on MNIST-format images padded to 32x32."""
    data_dir = args.data
    if os.path.exists(os.path.join(data_dir, "data_batch_1")):
        from ..data import CIFAR10Dataset

        train_set, test_set = CIFAR10Dataset(data_dir, train=True), CIFAR10Dataset(data_dir, train=False)
        train, test, channels = (train_set.X, train_set.y), (test_set.X, test_set.y), 3
    else:
        (Xtr, ytr), (Xte, yte) = _idx_split(data_dir, "train"), _idx_split(data_dir, "test")
        train, test, channels = (_padded_images(Xtr), ytr), (_padded_images(Xte), yte), 1
    model = ResNet9(device=args.device, in_channels=channels)
    train_loader, test_loader = _loaders(train, test, args.batch_size, args.device, args.limit)
    return ClassificationTask(model, train_loader, test_loader, f"ResNet9(in_channels={channels}) on {data_dir}")


def _tokenize(text: str, level: str):
    if level == "char":
        vocabulary = sorted(set(text))
        index = {c: i for i, c in enumerate(vocabulary)}
        return [index[c] for c in text], vocabulary
    from ..data import Dictionary

    dictionary = Dictionary()
    ids = [dictionary.add_word(w) for line in text.splitlines() for w in line.split() + ["<eos>"]]
    return ids, dictionary.idx2word


def _splits_into_batches(tokens: int, batch_size: int) -> bool:
    """Whether `tokens` split 90%/10% leave at least two tokens per batch column on each side."""
    cut = int(tokens * 0.9)
    return cut >= 2 * batch_size and tokens - cut >= 2 * batch_size


def lm(args) -> LanguageModelTask:
    """A language model (LSTM, RNN or Transformer) on a text file, by character or by word."""
    from ..data import batchify
    from .gpt import read_text

    path = args.text
    text = read_text(path, args.limit)
    ids, vocabulary = _tokenize(text, args.level)
    if not _splits_into_batches(len(ids), args.batch_size):
        needed = next(n for n in range(len(ids) + 1, 100 * args.batch_size)
                      if _splits_into_batches(n, args.batch_size))
        unit = "characters" if args.level == "char" else "words and line ends"
        where = (f"--limit {args.limit} keeps {len(ids)} tokens of --text {path}" if args.limit
                 else f"--text {path} holds {len(ids)} tokens")
        fix = "raise --limit or lower --batch-size" if args.limit else "give a longer text or lower --batch-size"
        raise ValueError(f"{where} ({unit}), too few for --batch-size {args.batch_size}: the 90%/10% "
                         f"training/test split needs {2 * args.batch_size} tokens or more on each side, "
                         f"{needed} in all; {fix}")
    cut = int(len(ids) * 0.9)
    train = batchify(ids[:cut], args.batch_size, args.device, "float32")
    test = batchify(ids[cut:], args.batch_size, args.device, "float32")
    model = LanguageModel(args.embedding, len(vocabulary), args.hidden, args.layers, seq_model=args.model,
                          seq_len=args.seq_len, device=args.device)
    return LanguageModelTask(model, train, test, args.seq_len,
                             f"LanguageModel({args.model}, vocab {len(vocabulary)}) on {path} by {args.level}",
                             vocabulary, device=args.device, clip=args.clip)


def _gpt(args):
    from .gpt import build_gpt_task

    return build_gpt_task(args)


@dataclass(frozen=True)
class Recipe:
    """A `needle train` recipe, declared once: what it builds, its defaults, and the data it reads.

    `defaults` fills every recipe-dependent flag the user leaves out; for `lm`, `model_defaults`
    then overrides them per `--model` (each sequence model needs its own optimizer and rate).
    `data_flag` names the flag that points at the recipe's files (None: data made in code),
    `default_data` where they are read from without it and `data_hint` how to get them.
    `flags`: the recipe-specific flags (the parser's toy, models and lm groups, and --limit)
    that this recipe reads; one of the others, given to this recipe, is refused.
    """

    name: str
    help: str
    build: Callable[[Any], Any]
    defaults: Dict[str, Any]
    data_flag: Optional[str] = None
    default_data: Optional[str] = None
    data_hint: str = ""
    model_defaults: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    flags: FrozenSet[str] = frozenset()

    def resolved_defaults(self, model: Optional[str] = None) -> Dict[str, Any]:
        per_model = self.model_defaults.get(model, {}) if model is not None else {}
        return {"weight_decay": 0.0, **self.defaults, **per_model}


_FASHION_HINT = "install Fashion-MNIST with `apt-get install -y dataset-fashion-mnist`, or pass --data DIR"

RECIPES: Dict[str, Recipe] = {r.name: r for r in [
    Recipe("toy", "an MLP on a 2-D set generated in code (--dataset)", toy,
           dict(epochs=20, batch_size=100, optimizer="adam", lr=0.01, lr_decay=1.0, hidden=64),
           flags=frozenset({"--dataset", "--samples", "--classes", "--hidden"})),
    Recipe("mlp", "the course's MLPResNet on MNIST-format files", mlp,
           dict(epochs=5, batch_size=100, optimizer="adam", lr=0.002, lr_decay=0.6, hidden=256, dropout=0.1),
           data_flag="--data", default_data=FASHION_MNIST_DIR, data_hint=_FASHION_HINT,
           flags=frozenset({"--data", "--limit", "--hidden", "--blocks", "--dropout"})),
    Recipe("cnn", "a small CNN on 28x28 MNIST-format images", cnn,
           dict(epochs=5, batch_size=100, optimizer="adam", lr=0.001, lr_decay=0.6, hidden=0),
           data_flag="--data", default_data=FASHION_MNIST_DIR, data_hint=_FASHION_HINT,
           flags=frozenset({"--data", "--limit"})),
    Recipe("resnet9", "ResNet9 on a cifar-10-batches-py folder or on MNIST-format images", resnet9,
           dict(epochs=5, batch_size=100, optimizer="adam", lr=0.001, lr_decay=0.6, hidden=0),
           data_flag="--data", default_data=FASHION_MNIST_DIR, data_hint=_FASHION_HINT,
           flags=frozenset({"--data", "--limit"})),
    # per model: Adam at the rate that trained best on the embedded text in a sweep over
    # {0.002, 0.003, 0.005, 0.01} (2 epochs, defaults otherwise), one step down for the RNN and
    # the Transformer, which are the first to diverge; the course's SGD at 4.0 sends the
    # Transformer to nan and leaves the RNN above ln(vocabulary)
    Recipe("lm", "an RNN, LSTM or Transformer language model on a text file (--model)", lm,
           dict(epochs=2, batch_size=32, optimizer="adam", lr=0.01, lr_decay=1.0, hidden=128),
           data_flag="--text", default_data=TINY_SHAKESPEARE,
           data_hint="pass --text PATH to train on another text file",
           model_defaults={
               "lstm": dict(optimizer="adam", lr=0.01),
               "rnn": dict(optimizer="adam", lr=0.005),
               "transformer": dict(optimizer="adam", lr=0.005),
           },
           flags=frozenset({"--text", "--limit", "--level", "--model", "--hidden", "--embedding", "--layers",
                            "--seq-len", "--clip", "--sample"})),
    # nanoGPT's shakespeare_char run on a CPU (its README): the flags' defaults are that run's
    Recipe("gpt", "nanoGPT's GPT on a text file by character (--text; nanoGPT's flags)", _gpt,
           dict(epochs=None, batch_size=12, optimizer="adamw", lr=1e-3, lr_decay=1.0, hidden=0, dropout=0.0,
                weight_decay=0.1),
           data_flag="--text", default_data=TINY_SHAKESPEARE_FULL,
           data_hint="pass --text PATH to train on another text file",
           flags=frozenset({"--text", "--limit", "--dropout", "--block-size", "--n-layer", "--n-head", "--n-embd",
                            "--iters", "--min-lr", "--warmup-iters", "--lr-decay-iters", "--beta2", "--grad-clip",
                            "--eval-interval", "--eval-iters", "--bias", "--sample"})),
]}
