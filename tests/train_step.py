"""The standard training step the compile tests run eagerly and compiled: reset the gradients,
loss of the model's logits, backward, optimizer step."""
import needle as ndl
from needle import nn


def train_step(model, opt, loss_fn):
    """step(x, y) -> loss. A model returning (logits, state), as LanguageModel does, is scored
    on its logits."""
    def step(x: ndl.Tensor, y: ndl.Tensor) -> ndl.Tensor:
        opt.reset_grad()
        logits = model(x)
        loss = loss_fn(logits[0] if isinstance(logits, tuple) else logits, y)
        loss.backward()
        opt.step()
        return loss
    return step


def eager_and_compiled(build, x, y, steps: int, **compile_options):
    """[eager, compiled]: each (the bytes of every step's loss, the bytes of the parameters after
    the steps) of `steps` training steps with SoftmaxLoss on a fresh build() -> (model, optimizer),
    run eagerly and then through ndl.compile(step, **compile_options). A compiled step must give
    the eager bits: callers assert the two are equal."""
    runs = []
    for compiled in (False, True):
        model, opt = build()
        step = train_step(model, opt, nn.SoftmaxLoss())
        run = ndl.compile(step, **compile_options) if compiled else step
        losses = [run(x, y).numpy().tobytes() for _ in range(steps)]
        runs.append((losses, [p.numpy().tobytes() for p in model.parameters()]))
    return runs
