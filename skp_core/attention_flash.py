"""Kept tokens' maps of one layer through the fused attention kernel (flash attention).

``softmax(q k^T) v`` with a one-hot v (column j is token S_j) is exactly the probabilities of
the kept tokens: the fused kernel (``F.scaled_dot_product_attention``) forms the logits block
by block, keeps only each pixel's running max and sum over all tokens, and never materializes
[pixels, tokens]; its backward recomputes the blocks and yields the restricted softmax
gradient's dq and dk. Queries are upsampled once per image (U_y q U_x^T) and q, k and v are
zero-padded to a common width (padding changes no logit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from skp_core.upsampled_attention_plan import LayerPlan, flash_width

__all__ = ["FlashEngine"]

#: Images per kernel call: bounds the [images, heads, R*R, width] query tensor.
IMAGES_PER_CALL = 4


class FlashEngine:
    """Maps and gradients of one layer's kept tokens through the fused attention kernel."""

    def __init__(self, plan: LayerPlan, kept: int) -> None:
        self.plan = plan
        self.kept = kept
        self.width = flash_width(plan.head_dim, kept)

    def _pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.width - x.shape[-1]))

    def _inputs(self, b0: int, b1: int, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q [n, H, R*R, E], k [1 or n, H, T, E] and the one-hot v [n, H, T, E] of images."""
        p = self.plan
        queries = torch.stack([p.upsampled_queries(b) for b in range(b0, b1)])  # [n, P, inner]
        q = queries.view(b1 - b0, -1, p.heads, p.head_dim).transpose(1, 2)
        k = p.k.detach() if p.k.shape[0] == 1 else p.k[b0:b1].detach()
        k = k.to(p.dtype).view(k.shape[0], p.tokens, p.heads, p.head_dim).transpose(1, 2)
        index = tokens.expand(b1 - b0, -1) if tokens.ndim == 1 else tokens[b0:b1]
        v = torch.zeros(b1 - b0, 1, p.tokens, self.width, dtype=p.dtype, device=p.device)
        columns = torch.arange(self.kept, device=p.device).expand_as(index)
        rows = torch.arange(b1 - b0, device=p.device)[:, None].expand_as(index)
        v[rows, 0, index, columns] = 1.0
        return self._pad(q), self._pad(k), v.expand(-1, p.heads, -1, -1)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Kept tokens' probabilities [n, H, R*R, K] (differentiable in q and k)."""
        k = k.expand(q.shape[0], -1, -1, -1)
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)[..., : self.kept]

    def _cpu_kernel(self) -> bool:
        """Whether torch's CPU flash kernel (which also returns the log-sum-exp) applies."""
        p = self.plan
        return p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64)

    @torch.no_grad()
    def add_maps(self, out: Tensor, tokens: Tensor) -> None:
        """Add weight x head-summed kept maps into ``out`` [B, R*R, K] (pixel-major).

        On the CPU the kernel's log-sum-exp is kept (when the layer has a store) for a later
        backward of any subset of these images and tokens.
        """
        p = self.plan
        for b0 in range(0, p.batch, IMAGES_PER_CALL):
            b1 = min(b0 + IMAGES_PER_CALL, p.batch)
            q, k, v = self._inputs(b0, b1, tokens)
            if self._cpu_kernel():
                k = k.expand(q.shape[0], -1, -1, -1)
                full, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, 0.0, False, scale=1.0
                )
                probs = full[..., : self.kept]
                if p.lse is not None and p.lse_known is not None:
                    p.lse[b0:b1] = lse
                    p.lse_known[b0:b1] = True
            else:
                probs = self._attend(q, k, v)
            out[b0:b1].add_(probs.sum(1), alpha=p.weight)

    def _kernel_grads(
        self, q: Tensor, k: Tensor, v: Tensor, g: Tensor, lse: Tensor
    ) -> tuple[Tensor, Tensor]:
        """dq, dk from the CPU kernel's backward with a stored lse: no forward recomputation.

        The kernel needs the forward output, here exactly ``exp(l_S - lse)`` for the kept
        columns (``l_S = q k_S^T``, a K-column product) and 0 for the padding.
        """
        k = k.expand(q.shape[0], -1, -1, -1)
        kept_keys = torch.matmul(k.transpose(-1, -2), v)  # [n, H, E, E]: column j = k[S_j]
        out = torch.matmul(q, kept_keys).sub_(lse[..., None]).exp_()
        out[..., self.kept :] = 0.0
        grad_out = torch.zeros_like(out)
        grad_out[..., : self.kept] = g
        dq, dk, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, lse, 0.0, False, scale=1.0
        )
        return dq, dk

    def grads(self, grad: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(dq [B, h*w, inner], dk [1 or B, T, inner]) from ``grad`` [B, R*R, K]."""
        p = self.plan
        dq_all = torch.zeros(p.q.shape, dtype=p.dtype, device=p.device)
        dk_all = torch.zeros(p.k.shape, dtype=p.dtype, device=p.device)
        for b0 in range(0, p.batch, IMAGES_PER_CALL):
            b1 = min(b0 + IMAGES_PER_CALL, p.batch)
            q, k, v = self._inputs(b0, b1, tokens)
            shape = (b1 - b0, p.heads, p.resolution**2, self.kept)
            g = (grad[b0:b1] * p.weight).to(p.dtype)[:, None].expand(shape)
            if self._cpu_kernel() and p.has_lse(b0, b1):
                assert p.lse is not None
                dq, dk = self._kernel_grads(q, k, v, g, p.lse[b0:b1].to(p.dtype))
                if p.k.shape[0] == 1:
                    dk = dk.sum(0, keepdim=True)
            else:
                q.requires_grad_(True)
                k.requires_grad_(True)
                with torch.enable_grad():
                    probs = self._attend(q, k, v)
                dq, dk = torch.autograd.grad(probs, (q, k), g)
            # [n, H, P, E] -> [n, P, inner], then back through the upsampling
            d_up = dq[..., : p.head_dim].transpose(1, 2).reshape(b1 - b0, p.resolution**2, -1)
            for i, b in enumerate(range(b0, b1)):
                dq_all[b] = p.queries_adjoint(d_up[i])
            dk = dk[..., : p.head_dim].transpose(1, 2).reshape(dk.shape[0], p.tokens, -1)
            if dk_all.shape[0] == 1:
                dk_all[0] += dk.sum(0)
            else:
                dk_all[b0:b1] = dk
        return dq_all, dk_all
