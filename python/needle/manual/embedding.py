"""ManualEmbedding: a lookup table whose backward pass scatter-adds into the table.

forward(ids) gathers rows: out[..., :] = weight[ids[...], :]. Every id that was
looked up receives the upstream gradient of each place it was used, so an id
appearing several times accumulates the sum of those gradients:
    weight_grad[r] = sum over positions p with ids[p] == r of g[p]
"""
from __future__ import annotations

from .. import init
from ..autograd import no_grad
from ..ops import IndexPlan, ScatterItem
from ._convert import as_index_array, as_tensor
from .base import ManualLayer


class ManualEmbedding(ManualLayer):
    """weight (num, dim) starts as N(0, 1) (like torch.nn.Embedding); ids of any shape -> (*ids.shape, dim)."""

    params = ("weight",)

    def __init__(self, num: int, dim: int, device=None, dtype="float32"):
        super().__init__()
        if num <= 0 or dim <= 0:
            raise ValueError(f"ManualEmbedding needs positive sizes, got num={num}, dim={dim}")
        self.num, self.dim = int(num), int(dim)
        self.weight = init.randn(num, dim, device=device, dtype=dtype)
        self.device, self.dtype = self.weight.device, self.weight.dtype

    def extra_repr(self) -> str:
        return f"{self.num}, {self.dim}, dtype={self.dtype}"

    @no_grad()
    def forward(self, ids):
        ids = as_index_array(ids, size=self.num, what=f"ManualEmbedding({self.num}, {self.dim}) ids")
        self._cache = ids
        return self.weight[ids]

    @no_grad()
    def backward(self, grad_out):
        ids = self._saved()
        g = as_tensor(grad_out, dtype=self.dtype, device=self.device, what="ManualEmbedding grad_out")
        self._check_grad_shape(g, ids.shape + (self.dim,))
        # the adjoint of the gather: zeros with each g row added at its id (repeated ids add up)
        self.weight_grad = ScatterItem(IndexPlan(self.weight.shape, ids, self.device))(g)
        return None
