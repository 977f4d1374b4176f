"""DETR's transformer (Carion et al., 2020) as mmdet 2.x built it: sine positional encoding, an
encoder of post-norm self-attention layers over the flattened feature map, a decoder of learned
queries with self- and cross-attention.

``torch.nn.TransformerEncoderLayer``/``DecoderLayer`` cannot be used as they are: DETR adds the
positional encoding to the queries and keys of every attention but not to the values (and the
query embedding to the decoder's queries in every layer), which those layers have no input for.
So the layers here are a few lines around ``torch.nn.MultiheadAttention``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from okc.models.detection.configs import ActCfg
from okc.models.detection.detr_configs import (
    AttentionCfg,
    PositionalEncodingCfg,
    TransformerCfg,
    TransformerLayerCfg,
)
from okc.models.detection.layers import activation


def sine_positional_encoding(mask: Tensor, cfg: PositionalEncodingCfg) -> Tensor:
    """(B, 2 * num_feats, H, W) encoding of each position of a (B, H, W) ``mask`` (True: padding):
    positions count only unpadded cells, so a padded image encodes its content like an unpadded
    one of the same size. y features first, then x; sines and cosines interleaved."""
    valid = (~mask).to(torch.float32)
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    if cfg.normalize:
        y = (y + cfg.offset) / (y[:, -1:, :] + cfg.eps) * cfg.scale
        x = (x + cfg.offset) / (x[:, :, -1:] + cfg.eps) * cfg.scale
    steps = torch.arange(cfg.num_feats, dtype=torch.float32, device=mask.device)
    dim_t = cfg.temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / cfg.num_feats)
    batch, height, width = mask.shape

    def encode(pos: Tensor) -> Tensor:
        pos = pos[..., None] / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).view(
            batch, height, width, -1
        )

    return torch.cat((encode(y), encode(x)), dim=3).permute(0, 3, 1, 2)


class Attention(nn.Module):
    """mmcv's MultiheadAttention: ``identity + drop(attn(query + query_pos, key + key_pos,
    value))``; the positions go into queries and keys only."""

    def __init__(self, cfg: AttentionCfg) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(
            cfg.embed_dims, cfg.num_heads, dropout=cfg.weights_drop, batch_first=True
        )
        self.drop = nn.Dropout(cfg.residual_drop)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor | None,
        key_pos: Tensor | None, key_padding_mask: Tensor | None,
    ) -> Tensor:  # fmt: skip
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        out = self.attn(q, k, value, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return query + self.drop(out)


def feed_forward(embed_dims: int, cfg: TransformerLayerCfg) -> nn.Sequential:
    """mmcv's FFN without its residual: (linear → act → dropout) x (fcs - 1), linear, dropout."""
    layers: list[nn.Module] = []
    width = embed_dims
    for _ in range(cfg.ffn_num_fcs - 1):
        layers += [nn.Linear(width, cfg.feedforward_channels), activation(cfg.act_cfg),
                   nn.Dropout(cfg.ffn_dropout)]  # fmt: skip
        width = cfg.feedforward_channels
    layers += [nn.Linear(width, embed_dims), nn.Dropout(cfg.ffn_dropout)]
    return nn.Sequential(*layers)


class EncoderLayer(nn.Module):
    """``self_attn, norm, ffn, norm`` (post-norm)."""

    def __init__(self, cfg: TransformerLayerCfg) -> None:
        super().__init__()
        dims = cfg.embed_dims
        self.self_attn = Attention(cfg.attention(0))
        self.ffn = feed_forward(dims, cfg)
        self.norm1 = nn.LayerNorm(dims, eps=cfg.norm_cfg.eps)
        self.norm2 = nn.LayerNorm(dims, eps=cfg.norm_cfg.eps)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor | None) -> Tensor:
        x = self.norm1(self.self_attn(x, x, x, pos, pos, mask))
        return self.norm2(x + self.ffn(x))


class DecoderLayer(nn.Module):
    """``self_attn, norm, cross_attn, norm, ffn, norm`` (post-norm)."""

    def __init__(self, cfg: TransformerLayerCfg) -> None:
        super().__init__()
        dims = cfg.embed_dims
        self.self_attn = Attention(cfg.attention(0))
        self.cross_attn = Attention(cfg.attention(1))
        self.ffn = feed_forward(dims, cfg)
        self.norms = nn.ModuleList(nn.LayerNorm(dims, eps=cfg.norm_cfg.eps) for _ in range(3))

    def forward(
        self, target: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor, mask: Tensor | None
    ) -> Tensor:
        x = self.norms[0](self.self_attn(target, target, target, query_pos, query_pos, None))
        x = self.norms[1](self.cross_attn(x, memory, memory, query_pos, pos, mask))
        return self.norms[2](x + self.ffn(x))


class DetrTransformer(nn.Module):
    """Encoder over the (B, HW, C) map, decoder of ``num_query`` learned queries; returns the
    decoder's outputs (L, B, Q, C): every layer's with ``return_intermediate``, else the last."""

    def __init__(self, cfg: TransformerCfg) -> None:
        super().__init__()
        enc, dec = cfg.encoder, cfg.decoder
        self.embed_dims = cfg.embed_dims
        self.encoder = nn.ModuleList(
            EncoderLayer(enc.transformerlayers) for _ in range(enc.num_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(dec.transformerlayers) for _ in range(dec.num_layers)
        )
        post = dec.post_norm_cfg
        self.post_norm = nn.LayerNorm(self.embed_dims, eps=post.eps) if post else nn.Identity()
        self.return_intermediate = dec.return_intermediate
        self._init_weights()

    def _init_weights(self) -> None:
        """mmdet's: Xavier-uniform for every weight matrix of the transformer."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: Tensor, mask: Tensor | None, query: Tensor, pos: Tensor) -> Tensor:
        """``x`` and ``pos`` (B, C, H, W), ``mask`` (B, H, W) True where padded (or None),
        ``query`` (Q, C) the query embedding."""
        batch = x.shape[0]
        memory = x.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2).to(memory.dtype)
        flat_mask = None if mask is None else mask.flatten(1)
        for layer in self.encoder:
            memory = layer(memory, pos, flat_mask)
        query_pos = query[None].expand(batch, -1, -1).to(memory.dtype)
        target = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.decoder:
            target = layer(target, query_pos, memory, pos, flat_mask)
            if self.return_intermediate:
                outputs.append(self.post_norm(target))
        if not self.return_intermediate:
            outputs.append(self.post_norm(target))
        return torch.stack(outputs)


def box_mlp(embed_dims: int, num_fcs: int, act: ActCfg) -> nn.Sequential:
    """DETR's box branch: ``num_fcs`` (linear ``embed_dims`` → ``embed_dims``, activation), then
    a linear to the 4 box numbers (mmdet: a residual-free FFN, its activation, ``fc_reg``)."""
    layers: list[nn.Module] = []
    for _ in range(num_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), activation(act)]
    layers.append(nn.Linear(embed_dims, 4))
    return nn.Sequential(*layers)
