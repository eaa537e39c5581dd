"""`needle export CHECKPOINT --out model.onnx`: a `needle train` checkpoint as an ONNX model.

A checkpoint stores the run's config (recipe, --hidden, --blocks, --model, ...) next to
the weights. The model is rebuilt from that config, as `needle train --resume` rebuilds
it, but without reading the training data: the sizes the data decided (the toy set's
classes, the images' channels, the vocabulary) are read from the shapes of the stored
weights (a `gpt` checkpoint stores its GPT's configuration in its info). The weights are
checked against the checkpoint's sha256 before they are used.

Language models keep their sequence state: an LSTM/RNN language model takes its initial
state h0 (c0) as optional inputs (zeros when left out) and returns its final state; a
Transformer language model and a GPT take any sequence length up to the one they were built
for (an LSTM/RNN is unrolled over its run's --seq-len, which stays fixed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

import numpy as np

from ..models import GPT, MLP, LanguageModel, MLPResNet, ResNet9, SmallCNN
from ..nn import Module
from ..onnx import OPSET, export, require_onnx
from ..serialization import read_safetensors, verify_digest
from .checkpoint import current_model_names, read_checkpoint_meta
from .loop import checkpoint_path

__all__ = ["ExportSpec", "RECIPE_EXPORTS", "export_checkpoint"]

_MODEL_PREFIX = "model/"  # how save_checkpoint names the model's arrays


@dataclass
class ExportSpec:
    """A recipe's model, rebuilt, with example inputs of the shape the recipe feeds it."""

    model: Module
    inputs: Tuple[Any, ...]  # arrays, or tuples of them (an LSTM's (h0, c0))
    input_names: List[str]
    output_names: List[str]
    batch_axes: List[Optional[int]]
    dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None  # replaces batch_axes when given
    optional_inputs: Tuple[str, ...] = ()


def _images(batch: int, *shape: int) -> np.ndarray:
    return np.random.RandomState(0).randn(batch, *shape).astype(np.float32)


def _classifier(model: Module, example: np.ndarray) -> ExportSpec:
    return ExportSpec(model, (example,), ["x"], ["logits"], [0])


def _toy(config: Dict[str, Any], state: Dict[str, np.ndarray], batch: int, info: Dict[str, Any]) -> ExportSpec:
    hidden = config["hidden"]
    classes = state["4.weight"].shape[1]  # the generated set decided it: read it from the last layer
    return _classifier(MLP(2, [hidden, hidden], classes), _images(batch, 2))


def _mlp(config, state, batch, info) -> ExportSpec:
    model = MLPResNet(784, config["hidden"], num_blocks=config["blocks"], num_classes=10,
                      drop_prob=config["dropout"])
    return _classifier(model, _images(batch, 784))


def _cnn(config, state, batch, info) -> ExportSpec:
    return _classifier(SmallCNN(1, 10, 28), _images(batch, 1, 28, 28))


def _resnet9(config, state, batch, info) -> ExportSpec:
    channels = state["model.0.0.weight"].shape[2]  # CIFAR-10 (3) or MNIST-format (1)
    return _classifier(ResNet9(in_channels=channels), _images(batch, channels, 32, 32))


def _lm(config, state, batch, info) -> ExportSpec:
    """Token ids (seq_len, batch), int64. An LSTM/RNN is unrolled over the run's --seq-len, which
    stays fixed; its initial state h0 (and c0), (layers, batch, hidden), is an optional input
    (zeros) and its final state an output. A Transformer takes any length up to --seq-len."""
    vocabulary = state["embedding.weight"].shape[0]
    seq_model, seq_len = config["model"], config["seq_len"]
    model = LanguageModel(config["embedding"], vocabulary, config["hidden"], config["layers"], seq_model=seq_model,
                          seq_len=seq_len)
    ids = np.random.RandomState(0).randint(0, vocabulary, (seq_len, batch)).astype(np.int64)
    if seq_model == "transformer":
        return ExportSpec(model, (ids,), ["tokens"], ["logits", "state"], [1],
                          dynamic_axes={"tokens": {0: "sequence", 1: "batch"}})
    zeros = np.zeros((config["layers"], batch, config["hidden"]), np.float32)
    state_in, state_out = (["h0", "c0"], ["h_n", "c_n"]) if seq_model == "lstm" else (["h0"], ["h_n"])
    initial: Any = (zeros, zeros.copy()) if seq_model == "lstm" else zeros
    return ExportSpec(model, (ids, initial), ["tokens"] + state_in, ["logits"] + state_out, [1] * (1 + len(state_in)),
                      optional_inputs=tuple(state_in))


def _gpt(config, state, batch, info) -> ExportSpec:
    """Token ids idx (batch, sequence) int64, any sequence length up to the GPT's block_size ->
    logits (batch, sequence, vocabulary)."""
    if "gpt" not in info:
        raise KeyError("the GPT's configuration (info['gpt'])")
    model = GPT(**info["gpt"])
    vocabulary, block = model.config["vocab_size"], model.config["block_size"]
    idx = np.random.RandomState(0).randint(0, vocabulary, (batch, block)).astype(np.int64)
    return ExportSpec(model, (idx,), ["idx"], ["logits"], [0], dynamic_axes={"idx": {0: "batch", 1: "sequence"}})


# recipe -> (run config, model arrays by state_dict name, example batch size, checkpoint info) -> ExportSpec
RECIPE_EXPORTS: Dict[str, Callable[[Dict[str, Any], Dict[str, np.ndarray], int, Dict[str, Any]], ExportSpec]] = {
    "toy": _toy, "mlp": _mlp, "cnn": _cnn, "resnet9": _resnet9, "lm": _lm, "gpt": _gpt,
}


def _read(checkpoint: str) -> Tuple[str, Dict[str, np.ndarray], Dict[str, Any]]:
    """(file, model arrays by state_dict name, metadata), checksum verified."""
    # (a folder's name is not empty, so it has a checkpoint path)
    path = cast(str, checkpoint_path(checkpoint)) if os.path.isdir(checkpoint) else checkpoint
    meta = read_checkpoint_meta(path)  # FileNotFoundError; ValueError: not a checkpoint, corrupted
    arrays, _ = read_safetensors(path)
    verify_digest(path, arrays, meta["sha256"])  # the arrays used are the ones the checksum covers
    state = current_model_names({k[len(_MODEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(_MODEL_PREFIX)})
    return path, state, meta


def export_checkpoint(checkpoint: str, out: str, *, batch_size: int = 2) -> Dict[str, Any]:
    """Rebuild the model of a `needle train` checkpoint (a file, or the run's --checkpoint
    folder), load its weights and write it to `out` as ONNX (opset 17, dynamic batch).

    Returns a summary: the file, the recipe, the epoch, and the inputs' and outputs'
    shapes ("batch" for the batch axis, "sequence" for a dynamic sequence length; optional
    inputs, such as an LSTM's h0 and c0, are listed too). Raises ImportError without onnx,
    FileNotFoundError for a missing file, ValueError for a file that is not a
    checkpoint, is corrupted, or holds a recipe this command cannot rebuild.
    """
    require_onnx()
    path, state, meta = _read(checkpoint)
    config = meta["info"]["config"]
    recipe = config.get("recipe")
    if recipe not in RECIPE_EXPORTS:
        raise ValueError(f"{path}: recipe {recipe!r} cannot be exported (known: {', '.join(RECIPE_EXPORTS)})")
    try:
        spec = RECIPE_EXPORTS[recipe](config, state, batch_size, meta["info"])
    except KeyError as err:
        raise ValueError(f"{path}: the {recipe} checkpoint lacks {err} to rebuild its model") from None
    try:
        spec.model.load_state_dict(state)
    except ValueError as err:
        raise ValueError(f"{path}: the weights do not fit the {recipe} model rebuilt from its config: {err}") from None
    proto = export(spec.model, spec.inputs, out, input_names=spec.input_names, output_names=spec.output_names,
                   batch_axes=spec.batch_axes, dynamic_axes=spec.dynamic_axes, optional_inputs=spec.optional_inputs)
    return {
        "onnx": str(out),
        "checkpoint": path,
        "recipe": recipe,
        "epoch": meta["epoch"],
        "opset": OPSET,
        "inputs": {v.name: _shape(v) for v in proto.graph.input},
        "outputs": {v.name: _shape(v) for v in proto.graph.output},
    }


def _shape(value_info) -> List[Any]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]
