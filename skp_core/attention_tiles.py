"""Blocked computation of one layer's upsampled-attention maps, a tile of output rows at a time.

Used for every token's maps (the candidate ranking needs them all) and for layers whose heads
are too wide for the flash path. A tile is a block of output rows of one head: its logits
[rows*R, T] are formed, soft-maxed over tokens and added into the maps, so nothing of size
[heads, R*R, T] ever exists and the tile stays in cache. Two ways to form a tile's logits:

- ``logits``: native logits ``q k^T`` [h*w, T], upsampled along x once per image ([h, R*T]),
  then along y per tile as a small matrix product with the rows of U_y it needs;
- ``query``: queries upsampled once per image ([R*R, inner]), then ``q_tile k^T`` per tile.

Backward recomputes each tile and applies the softmax gradient (restricted to the kept tokens
when there are some), then the transposes of the same linear maps. Each pixel's log-sum-exp
comes from the layer's store when a flash forward filled it (``exp(l - lse)``: one pass less
than a softmax); tiles never fill it, since that costs them more than it saves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skp_core.upsampled_attention_plan import LayerPlan

__all__ = ["TileEngine"]

#: (r0, r1, i0, i1, U_y[r0:r1, i0:i1]): a tile's output rows and the native rows it reads.
Window = tuple[int, int, int, int, Tensor]


class TileEngine:
    """Maps and gradients of one layer through tiles of ``plan.block_rows`` output rows."""

    def __init__(self, plan: LayerPlan, strategy: str | None = None) -> None:
        self.plan = plan
        p = plan
        #: "logits" or "query" (the plan's unless given: a flash plan's backward takes tiles).
        self.strategy = strategy or plan.strategy
        # One head per tile on the CPU (cache-sized tiles, 2-D products); all heads on a GPU.
        if p.device.type == "cuda":
            self.head_groups: list[int | slice] = [slice(0, p.heads)]
        else:
            self.head_groups = list(range(p.heads))
        size = p.heads if p.device.type == "cuda" else 1
        numel = size * max(p.block_rows, p.backward_rows) * p.resolution * p.tokens
        self._logits = torch.empty(numel, dtype=p.dtype, device=p.device)
        self._probs = torch.empty(numel, dtype=p.dtype, device=p.device)

    # -- per image ---------------------------------------------------------------------------
    def _kept_first(self, chosen: Tensor | None) -> tuple[Tensor | None, slice | Tensor]:
        """A token order with the kept tokens first, and where the kept columns then lie.

        The order changes no value (a softmax does not care where its columns are), but
        distinct kept tokens become the tile's first K columns: a view instead of an
        index_select (forward) and an index_add (backward). Repeated kept tokens keep the
        indexed path.
        """
        if chosen is None:
            return None, slice(None)
        p = self.plan
        rest = torch.ones(p.tokens, dtype=torch.bool, device=p.device)
        rest[chosen] = False
        others = rest.nonzero().flatten()
        distinct = torch.unique(chosen)
        if distinct.numel() == chosen.numel():
            return torch.cat([chosen, others]), slice(0, chosen.numel())
        return torch.cat([distinct, others]), torch.searchsorted(distinct, chosen)

    def _source(self, b: int, order: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What image b's tiles are formed from, and its per-head keys [H, T, d].

        Keys come in ``order`` when given, and the tiles' token columns then follow it.
        """
        p = self.plan
        q, k = p.head_qk(b)
        if order is not None:
            k = k.index_select(1, order)
        h, w = p.grid
        if self.strategy == "logits":
            native = torch.matmul(q, k.transpose(1, 2)).view(p.heads, h, w, p.tokens)
            along_x = torch.matmul(p.ux, native)  # [H, h, R, T]
            return along_x.reshape(p.heads, h, p.resolution * p.tokens), k
        return p.upsampled_queries(b), k  # [R*R, inner]

    def _tile_logits(self, source: Tensor, k: Tensor, win: Window, heads: int | slice) -> Tensor:
        """Logits of window ``win`` for a head (2-D [rows*R, T]) or a head group (3-D)."""
        p = self.plan
        r0, r1, i0, i1, weights = win
        pixels = (r1 - r0) * p.resolution
        grouped = isinstance(heads, slice)
        g = heads.stop - heads.start if isinstance(heads, slice) else 1
        out = self._logits[: g * pixels * p.tokens]
        if self.strategy == "logits":
            band = source[heads, i0:i1]  # [win, R*T] or [g, win, R*T]
            shape = (g, r1 - r0, -1) if grouped else (r1 - r0, -1)
            torch.matmul(weights, band, out=out.view(shape))
        else:
            q = self._tile_queries(source, r0, r1, heads)
            shape = (g, pixels, p.tokens) if grouped else (pixels, p.tokens)
            torch.matmul(q, k[heads].transpose(-1, -2), out=out.view(shape))
        return out.view((g, pixels, p.tokens) if grouped else (pixels, p.tokens))

    def _tile_queries(self, queries: Tensor, r0: int, r1: int, heads: int | slice) -> Tensor:
        """Upsampled queries of rows [r0, r1) for a head [P, d] or a head group [g, P, d]."""
        p = self.plan
        rows = queries[r0 * p.resolution : r1 * p.resolution]
        per_head = rows.view(rows.shape[0], p.heads, p.head_dim)[:, heads]
        return per_head.transpose(0, 1) if isinstance(heads, slice) else per_head

    def _order(self, all_tokens: bool, backward: bool) -> list[tuple[Window, int | slice]]:
        """(window, heads) pairs in a cache-friendly order.

        With every token kept, the [rows*R, T] output tile is the big operand: finish a window
        (all heads) before the next. With a few kept tokens the input band is: run one head's
        windows in a row, so consecutive windows reuse the native rows they share.
        """
        windows = self.plan.backward_windows if backward else self.plan.windows
        if all_tokens:
            return [(w, h) for w in windows for h in self.head_groups]
        return [(w, h) for h in self.head_groups for w in windows]

    # -- forward -------------------------------------------------------------------------------
    @torch.no_grad()
    def add_maps(self, out: Tensor, tokens: Tensor | None) -> None:
        """Add weight x head-summed maps into ``out`` [B, R*R, T or K] (pixel-major)."""
        p = self.plan
        r = p.resolution
        for b in range(p.batch):
            chosen = None if tokens is None else (tokens if tokens.ndim == 1 else tokens[b])
            order, kept = self._kept_first(chosen)
            source, k = self._source(b, order)
            for win, heads in self._order(all_tokens=chosen is None, backward=False):
                r0, r1 = win[:2]
                tile = out[b, r0 * r : r1 * r]
                logits = self._tile_logits(source, k, win, heads)
                into = self._probs[: logits.numel()].view_as(logits)
                probs = torch.softmax(logits, -1, out=into)[..., kept]
                if probs.ndim == 3:
                    probs = probs.sum(0)
                tile.add_(probs, alpha=p.weight)

    # -- backward ------------------------------------------------------------------------------
    @torch.no_grad()
    def grads(self, grad: Tensor, tokens: Tensor | None) -> tuple[Tensor, Tensor]:
        """(dq [B, h*w, inner], dk [1 or B, T, inner]) from ``grad`` [B, R*R, T or K]."""
        p = self.plan
        r = p.resolution
        dq_all = torch.zeros(p.q.shape, dtype=p.dtype, device=p.device)
        dk_all = torch.zeros(p.k.shape, dtype=p.dtype, device=p.device)
        for b in range(p.batch):
            chosen = None if tokens is None else (tokens if tokens.ndim == 1 else tokens[b])
            order, kept = self._kept_first(chosen)
            source, k = self._source(b, order)
            stored = None
            if p.lse is not None and p.has_lse(b, b + 1):
                stored = p.lse[b].to(p.dtype)
            d_source = torch.zeros_like(source)
            d_k = torch.zeros_like(k)
            for win, heads in self._order(all_tokens=chosen is None, backward=True):
                r0, r1 = win[:2]
                g_tile = (grad[b, r0 * r : r1 * r] * p.weight).to(p.dtype).contiguous()
                logits = self._tile_logits(source, k, win, heads)
                into = self._probs[: logits.numel()].view_as(logits)
                if stored is None:
                    probs = torch.softmax(logits, -1, out=into)
                else:  # exp(l - lse): one pass fewer than a softmax
                    lse = stored[heads, r0 * r : r1 * r].unsqueeze(-1)
                    probs = torch.sub(logits, lse, out=into).exp_()
                if chosen is None:
                    dlogits = torch.ops.aten._softmax_backward_data(
                        g_tile.expand_as(probs), probs, -1, probs.dtype
                    )
                else:
                    # p_n (g_n [n in S] - sum_{m in S} g_m p_m), in the probs buffer
                    weighted = probs[..., kept] * g_tile
                    total = weighted.sum(-1, keepdim=True).neg_()
                    dlogits = probs.mul_(total)
                    if isinstance(kept, slice):
                        dlogits[..., kept].add_(weighted)
                    else:
                        dlogits.index_add_(-1, kept, weighted)
                self._accumulate(source, k, d_source, d_k, win, heads, dlogits)
            dq, dk = self._finish(b, d_source, d_k, k)
            if order is not None:  # back to the tokens' own order
                dk = torch.empty_like(dk).index_copy_(0, order, dk)
            dq_all[b] += dq
            dk_all[b if dk_all.shape[0] > 1 else 0] += dk
        return dq_all, dk_all

    def _accumulate(
        self,
        source: Tensor,
        k: Tensor,
        d_source: Tensor,
        d_k: Tensor,
        win: Window,
        heads: int | slice,
        dlogits: Tensor,
    ) -> None:
        """Add a tile's logit gradient into the gradients of its source and keys."""
        r0, r1, i0, i1, weights = win
        if self.strategy == "logits":
            band = d_source[heads, i0:i1]  # [win, R*T] or [g, win, R*T]
            rows = dlogits.reshape(*dlogits.shape[:-2], r1 - r0, -1)
            if band.ndim == 2:
                band.addmm_(weights.T, rows)
            else:
                band.baddbmm_(weights.T.expand(band.shape[0], -1, -1), rows)
            return
        q = self._tile_queries(source, r0, r1, heads)
        dq = self._tile_queries(d_source, r0, r1, heads)
        dq.add_(torch.matmul(dlogits, k[heads]))
        d_k[heads].add_(torch.matmul(dlogits.transpose(-1, -2), q))

    def _finish(self, b: int, d_source: Tensor, d_k: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Image b's gradients of its native q [h*w, inner] and of k [T, inner].

        dk comes in the token order of ``k``, the per-head keys the tiles used.
        """
        p = self.plan
        if self.strategy == "logits":
            q = p.head_qk(b)[0]
            h, w = p.grid
            d_along_x = d_source.view(p.heads, h, p.resolution, p.tokens)
            d_native = torch.matmul(p.ux.T, d_along_x).view(p.heads, h * w, p.tokens)
            dq = torch.matmul(d_native, k)  # [H, n, d]
            dk = torch.matmul(d_native.transpose(1, 2), q)  # [H, T, d]
            return p.merge_heads(dq), p.merge_heads(dk)
        return p.queries_adjoint(d_source), p.merge_heads(d_k)
