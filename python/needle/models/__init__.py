"""Ready-made models: the course's MLP ResNet, ResNet9 and language model, and a small MLP."""
from .mlp import MLP  # noqa: F401
from .mlp_resnet import MLPResNet, ResidualBlock  # noqa: F401
from .resnet9 import ConvBN, ResNet9  # noqa: F401
from .language_model import LanguageModel  # noqa: F401
