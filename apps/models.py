"""The course's hw4 models: ResNet9 and LanguageModel (rnn, lstm or transformer)."""
import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import numpy as np  # noqa: E402

from needle.models.language_model import LanguageModel  # noqa: E402,F401
from needle.models.resnet9 import ConvBN, ResNet9  # noqa: E402,F401

np.random.seed(0)
