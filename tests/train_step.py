"""The standard training step the compile tests run eagerly and compiled: reset the gradients,
loss of the model's logits, backward, optimizer step."""
import needle as ndl


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
