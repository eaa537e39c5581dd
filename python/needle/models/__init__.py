"""Ready-made models: the course's MLP ResNet, ResNet9 and language model, a small MLP and CNN, and
nanoGPT's GPT."""
from .cnn import SmallCNN  # noqa: F401
from .gpt import GPT  # noqa: F401
from .language_model import LanguageModel  # noqa: F401
from .mlp import MLP  # noqa: F401
from .mlp_resnet import MLPResNet, ResidualBlock  # noqa: F401
from .resnet9 import ConvBN, ResNet9  # noqa: F401
