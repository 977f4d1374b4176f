"""The nested mmdet/mmcv settings of a DETR head (``transformer``, ``positional_encoding``,
``train_cfg``, ``test_cfg``), each typed as a frozen class as in ``configs``: an unknown key gets
a did-you-mean, a setting okc does not implement is refused with the reason. Errors name the
dotted key inside the head's params (``transformer.encoder.transformerlayers.attn_cfgs.0``).

mmcv spread a transformer over registries (``Transformer`` → ``DetrTransformerEncoder`` /
``DetrTransformerDecoder`` → ``BaseTransformerLayer`` / ``DetrTransformerDecoderLayer`` →
``MultiheadAttention`` + ``FFN``); okc accepts those ``type`` names and builds one fixed
architecture from them (``okc.models.detection.transformer``): DETR's post-norm layers.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from okc.errors import ParamError
from okc.models.detection.configs import RELU, ActCfg, _in_unit, _one_of, cfg


@cfg
class AttentionCfg:
    """mmcv's ``MultiheadAttention``, run as ``torch.nn.MultiheadAttention``.

    ``attn_drop`` drops attention weights; ``proj_drop`` and the residual dropout both drop the
    output before the residual add. ``dropout`` is mmcv's older spelling that set both
    ``attn_drop`` and the residual dropout (what DETR's configs use).
    """

    type: Literal["MultiheadAttention"] = "MultiheadAttention"
    embed_dims: int
    num_heads: int
    dropout: float | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.embed_dims < 1 or self.num_heads < 1 or self.embed_dims % self.num_heads:
            raise ParamError(
                "num_heads",
                f"embed_dims ({self.embed_dims}) must be a positive multiple of num_heads "
                f"({self.num_heads})",
            )
        if self.dropout is not None and self.attn_drop:
            raise ParamError("attn_drop", "set dropout (mmcv's older key) or attn_drop, not both")
        for key in ("dropout", "attn_drop", "proj_drop"):
            _in_unit(key, getattr(self, key))

    @property
    def weights_drop(self) -> float:
        return self.attn_drop if self.dropout is None else self.dropout

    @property
    def residual_drop(self) -> float:
        """Both drop the attention output before the residual add: one dropout of the two."""
        keep = (1.0 - self.proj_drop) * (1.0 - (self.dropout or 0.0))
        return 1.0 - keep


@cfg
class LayerNormCfg:
    """mmcv's ``norm_cfg`` of a transformer layer: LayerNorm only (what DETR uses)."""

    type: str = "LN"
    eps: float = 1e-5

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("LN",), " (transformer layers use LayerNorm)")


@cfg
class TransformerLayerCfg:
    """mmcv's ``BaseTransformerLayer`` / mmdet's ``DetrTransformerDecoderLayer``.

    ``attn_cfgs``: one mapping (shared by every attention of the layer) or a list of them.
    ``operation_order`` must be DETR's post-norm order (see ``EncoderCfg``, ``DecoderCfg``). The
    FFN is ``ffn_num_fcs`` linear layers (``embed_dims`` → ``feedforward_channels`` ... →
    ``embed_dims``) with ``act_cfg`` between and ``ffn_dropout`` after each activation and after
    the last layer, then the residual add.
    """

    type: Literal["BaseTransformerLayer", "DetrTransformerDecoderLayer"] = "BaseTransformerLayer"
    attn_cfgs: AttentionCfg | tuple[AttentionCfg, ...]
    operation_order: tuple[str, ...]
    feedforward_channels: int = 1024
    ffn_dropout: float = 0.0
    ffn_num_fcs: int = 2
    act_cfg: ActCfg = RELU
    norm_cfg: LayerNormCfg = LayerNormCfg()

    def __attrs_post_init__(self) -> None:
        if isinstance(self.attn_cfgs, AttentionCfg):  # one mapping: a list of one
            object.__setattr__(self, "attn_cfgs", (self.attn_cfgs,))
        if self.feedforward_channels < 1 or self.ffn_num_fcs < 2:
            raise ParamError(
                "feedforward_channels", "need feedforward_channels >= 1 and ffn_num_fcs >= 2"
            )
        _in_unit("ffn_dropout", self.ffn_dropout)
        dims = {a.embed_dims for a in self.attentions}
        if len(dims) > 1:
            raise ParamError("attn_cfgs", f"every attention needs the same embed_dims, got {dims}")

    @property
    def attentions(self) -> tuple[AttentionCfg, ...]:
        return self.attn_cfgs  # type: ignore[return-value]  # a tuple after __attrs_post_init__

    @property
    def embed_dims(self) -> int:
        return self.attentions[0].embed_dims

    def attention(self, i: int) -> AttentionCfg:
        """The config of the layer's ``i``-th attention (one mapping serves them all)."""
        return self.attentions[0] if len(self.attentions) == 1 else self.attentions[i]


@cfg
class _LayerStack:
    """``num_layers`` copies of ``transformerlayers``, which must run DETR's post-norm ``order``
    (other orders, pre-norm or extra attentions, are refused rather than approximated)."""

    num_layers: int
    transformerlayers: TransformerLayerCfg

    what: ClassVar[str]
    order: ClassVar[tuple[str, ...]]
    min_layers: ClassVar[int]

    def __attrs_post_init__(self) -> None:
        if self.num_layers < self.min_layers:
            raise ParamError("num_layers", f"must be >= {self.min_layers}, got {self.num_layers}")
        layer, expected = self.transformerlayers, self.order
        if tuple(layer.operation_order) != expected:
            raise ParamError(
                "transformerlayers.operation_order",
                f"the {self.what} runs DETR's post-norm layer {list(expected)}; "
                f"{list(layer.operation_order)} is not supported",
            )
        count = sum(op.endswith("attn") for op in expected)
        if len(layer.attentions) not in (1, count):
            raise ParamError(
                "transformerlayers.attn_cfgs",
                f"{len(layer.attentions)} attention configs for {count} attentions: give one "
                f"mapping or a list of {count}",
            )


@cfg
class EncoderCfg(_LayerStack):
    """mmdet's ``DetrTransformerEncoder``: layers ``[self_attn, norm, ffn, norm]``."""

    type: Literal["DetrTransformerEncoder"] = "DetrTransformerEncoder"

    what, order, min_layers = "encoder", ("self_attn", "norm", "ffn", "norm"), 0


@cfg
class DecoderCfg(_LayerStack):
    """mmdet's ``DetrTransformerDecoder``: layers ``[self_attn, norm, cross_attn, norm, ffn,
    norm]``, then ``post_norm_cfg`` (a LayerNorm; null: none). ``return_intermediate`` gives
    every layer's (normed) output, which the head turns into auxiliary losses; otherwise only
    the last layer's."""

    type: Literal["DetrTransformerDecoder"] = "DetrTransformerDecoder"
    return_intermediate: bool = False
    post_norm_cfg: LayerNormCfg | None = LayerNormCfg()

    what, order = "decoder", ("self_attn", "norm", "cross_attn", "norm", "ffn", "norm")
    min_layers = 1


@cfg
class TransformerCfg:
    """mmdet's ``Transformer`` (DETR's): an encoder over the feature map and a decoder of
    learned queries attending to it. Encoder and decoder share ``embed_dims``."""

    type: Literal["Transformer"] = "Transformer"
    encoder: EncoderCfg
    decoder: DecoderCfg

    def __attrs_post_init__(self) -> None:
        enc, dec = self.encoder.transformerlayers, self.decoder.transformerlayers
        if enc.embed_dims != dec.embed_dims:
            raise ParamError(
                "decoder.transformerlayers.attn_cfgs",
                f"embed_dims {dec.embed_dims} differs from the encoder's {enc.embed_dims}",
            )

    @property
    def embed_dims(self) -> int:
        return self.encoder.transformerlayers.embed_dims


@cfg
class PositionalEncodingCfg:
    """mmcv's ``SinePositionalEncoding``: ``num_feats`` sine/cosine features per axis (so
    ``2 * num_feats`` must equal the transformer's ``embed_dims``). With ``normalize`` the
    positions are scaled to ``[0, scale]`` over the unpadded extent (``offset`` added first)."""

    type: Literal["SinePositionalEncoding"] = "SinePositionalEncoding"
    num_feats: int
    temperature: float = 10000
    normalize: bool = False
    scale: float = 2 * 3.141592653589793
    eps: float = 1e-6
    offset: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.num_feats < 1:
            raise ParamError("num_feats", f"must be >= 1, got {self.num_feats}")


@cfg
class CostCfg:
    """One term of the Hungarian matching cost (mmdet's match costs), times ``weight``:

    - ``ClassificationCost``: minus the softmax probability of the box's class;
    - ``BBoxL1Cost``: L1 distance of the boxes normalised by the image size, as ``cx, cy, w, h``
      (``box_format: xywh``, DETR's) or ``x1, y1, x2, y2`` (``xyxy``);
    - ``IoUCost``: minus the ``giou`` (or ``iou``) of the boxes in pixels.
    """

    type: str
    weight: float = 1.0
    box_format: Literal["xywh", "xyxy"] | None = None
    iou_mode: Literal["giou", "iou"] | None = None

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("ClassificationCost", "BBoxL1Cost", "IoUCost"),
                " (DETRHead classifies with a softmax; FocalLossCost is for sigmoid heads)"
                if self.type == "FocalLossCost" else "")  # fmt: skip
        if self.box_format is not None and self.type != "BBoxL1Cost":
            raise ParamError("box_format", f"only BBoxL1Cost has box_format, not {self.type}")
        if self.iou_mode is not None and self.type != "IoUCost":
            raise ParamError("iou_mode", f"only IoUCost has iou_mode, not {self.type}")
        if self.weight < 0:
            raise ParamError("weight", f"must be >= 0, got {self.weight}")


_COSTS = {"cls_cost": "ClassificationCost", "reg_cost": "BBoxL1Cost", "iou_cost": "IoUCost"}


@cfg
class HungarianAssignerCfg:
    """mmdet's ``HungarianAssigner``: per image, the one-to-one query ↔ box matching of least
    total ``cls_cost + reg_cost + iou_cost`` (defaults: mmdet's, weights 1)."""

    type: Literal["HungarianAssigner"] = "HungarianAssigner"
    cls_cost: CostCfg = CostCfg(type="ClassificationCost")
    reg_cost: CostCfg = CostCfg(type="BBoxL1Cost")
    iou_cost: CostCfg = CostCfg(type="IoUCost")

    def __attrs_post_init__(self) -> None:
        for key, kind in _COSTS.items():
            got = getattr(self, key).type
            if got != kind:
                raise ParamError(f"{key}.type", f"the {key} is a {kind}, got {got!r}")

    @property
    def box_format(self) -> str:
        return self.reg_cost.box_format or "xyxy"

    @property
    def iou_mode(self) -> str:
        return self.iou_cost.iou_mode or "giou"


@cfg
class DetrTrainCfg:
    """mmdet's ``train_cfg`` of DETR: the ``assigner`` (DETR samples nothing: every query
    learns, matched ones their box, the rest background)."""

    assigner: HungarianAssignerCfg = HungarianAssignerCfg()


@cfg
class DetrTestCfg:
    """mmdet's ``test_cfg`` of DETR: keep the ``max_per_img`` queries of highest class
    probability (no NMS, no score threshold: DETR's queries do not duplicate)."""

    __test__ = False  # not a pytest class

    max_per_img: int = 100

    def __attrs_post_init__(self) -> None:
        if self.max_per_img < 1:
            raise ParamError("max_per_img", f"must be at least 1, got {self.max_per_img}")
