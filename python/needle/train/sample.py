"""`needle sample CHECKPOINT`: text from the model of a checkpoint.

Three kinds of checkpoint are read:

* `needle train gpt`: the GPT's configuration and the character vocabulary are stored in
  the checkpoint's info; the GPT is rebuilt and loaded (checksum verified);
* `needle train lm`: the language model is rebuilt from the run's config (as `needle
  export` does); its vocabulary is the one stored, or, for checkpoints made before needle
  stored it, rebuilt from the run's --text (the same tokenisation);
* nanoGPT's `ckpt.pt` (a torch pickle: reading it needs torch) with the `meta.pkl` of its
  dataset (stoi/itos) beside it or in `data/<dataset>/` as nanoGPT's sample.py finds it:
  its `model_args` build the GPT, `needle.interop.from_torch` loads its `model` state dict.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._packaging import install_hint
from ..autograd import Tensor
from ..models import GPT, LanguageModel
from .export import _read
from .gpt import sample_text

__all__ = ["sample_checkpoint", "load_gpt_checkpoint", "load_nanogpt"]


def load_gpt_checkpoint(path: str) -> Tuple[GPT, List[str]]:
    """(the GPT of a `needle train gpt` checkpoint, its character vocabulary)."""
    path, state, meta = _read(path)
    info = meta["info"]
    if "gpt" not in info or "vocabulary" not in info:
        raise ValueError(f"{path}: a gpt checkpoint without its model configuration or vocabulary")
    model = GPT(**info["gpt"])
    model.load_state_dict(state)
    return model, list(info["vocabulary"])


def load_nanogpt(path: str) -> Tuple[GPT, Dict[str, Any]]:
    """(a GPT holding the weights of nanoGPT's ckpt.pt, its meta.pkl contents)."""
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: nanoGPT's checkpoints are torch pickles; reading one needs torch "
                         f"({install_hint(package='torch')})") from None
    from ..interop import from_torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    try:
        args = ckpt["model_args"]
        model = GPT(args["vocab_size"], args["block_size"], args["n_layer"], args["n_head"], args["n_embd"],
                    dropout=0.0, bias=bool(args.get("bias", True)))
        from_torch(model, ckpt["model"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a nanoGPT checkpoint (no {err})") from None
    folder = os.path.dirname(os.path.abspath(path))
    candidates = [os.path.join(folder, "meta.pkl")]
    dataset = ckpt.get("config", {}).get("dataset")
    if dataset:
        candidates.append(os.path.join("data", dataset, "meta.pkl"))
    for meta_path in candidates:
        if os.path.exists(meta_path):
            with open(meta_path, "rb") as f:
                return model, pickle.load(f)
    raise ValueError(f"{path}: no meta.pkl (the dataset's vocabulary) beside it or in data/{dataset}/; "
                     "nanoGPT's data/<dataset>/prepare.py writes it")


def _lm_vocabulary(config: Dict[str, Any], info: Dict[str, Any], path: str) -> List[str]:
    if "vocabulary" in info:
        return list(info["vocabulary"])
    from .recipes import _tokenize

    text_path = config.get("text")
    if not text_path or not os.path.exists(text_path):
        raise ValueError(f"{path}: this lm checkpoint predates stored vocabularies and its --text {text_path} "
                         "is gone; its vocabulary cannot be rebuilt")
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    if config.get("limit"):
        text = text[: config["limit"]]
    return list(_tokenize(text, config.get("level", "char"))[1])


def _sample_lm(path: str, state, meta, prompt: str, tokens: int, temperature: float, top_k: Optional[int],
               seed: int) -> str:
    config = meta["info"]["config"]
    vocabulary = _lm_vocabulary(config, meta["info"], path)
    model = LanguageModel(config["embedding"], len(vocabulary), config["hidden"], config["layers"],
                          seq_model=config["model"], seq_len=config["seq_len"])
    model.load_state_dict(state)
    model.eval()
    index = {w: i for i, w in enumerate(vocabulary)}
    words = list(prompt) if config.get("level", "char") == "char" else prompt.split()
    missing = [w for w in words if w not in index]
    if missing:
        raise ValueError(f"--prompt: {missing[0]!r} is not in the model's vocabulary")
    ids = [index[w] for w in words] or [0]
    rng = np.random.RandomState(seed)
    recurrent = config["model"] != "transformer"
    h = None
    from ..autograd import no_grad

    with no_grad():
        if recurrent and len(ids) > 1:  # run the prompt through first
            _, h = model(Tensor(np.array(ids[:-1], dtype=np.float32)[:, None], requires_grad=False), h)
        for _ in range(tokens):
            context = ids[-1:] if recurrent else ids[-config["seq_len"]:]
            logits, state_out = model(Tensor(np.array(context, dtype=np.float32)[:, None], requires_grad=False), h)
            if recurrent:
                h = state_out
            z = logits.numpy()[-1].astype(np.float64) / temperature
            if top_k is not None and top_k < z.size:
                z = np.where(z < np.sort(z)[-top_k], -np.inf, z)
            p = np.exp(z - z.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    sep = "" if config.get("level", "char") == "char" else " "
    return sep.join(vocabulary[i] for i in ids[0 if words else 1:])


def sample_checkpoint(checkpoint: str, *, prompt: str = "\n", tokens: int = 500, temperature: float = 0.8,
                      top_k: Optional[int] = 200, seed: int = 1337) -> str:
    """The prompt and `tokens` tokens generated after it by the checkpoint's model (see the module
    docstring). Raises FileNotFoundError for a missing file, ValueError for anything it cannot read."""
    if not (temperature > 0):
        raise ValueError(f"--temperature {temperature}: must be > 0")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k {top_k}: must be at least 1")
    if checkpoint.endswith(".pt"):
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(f"no such file: {checkpoint}")
        model, meta = load_nanogpt(checkpoint)
        stoi, itos = meta["stoi"], meta["itos"]
        missing = [c for c in prompt if c not in stoi]
        if missing:
            raise ValueError(f"--prompt: the character {missing[0]!r} is not in the model's vocabulary")
        vocabulary = [itos[i] for i in range(len(itos))]
        return sample_text(model, vocabulary, prompt, tokens, seed, temperature, top_k)
    path, state, meta = _read(checkpoint)
    recipe = meta["info"]["config"].get("recipe")
    if recipe == "gpt":
        model, vocabulary = load_gpt_checkpoint(path)
        return sample_text(model, vocabulary, prompt, tokens, seed, temperature, top_k)
    if recipe == "lm":
        return _sample_lm(path, state, meta, prompt, tokens, temperature, top_k, seed)
    raise ValueError(f"{path}: a {recipe} checkpoint; `needle sample` reads gpt and lm checkpoints (and nanoGPT's)")
