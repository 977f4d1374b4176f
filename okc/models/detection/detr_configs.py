"""The nested mmdet/mmcv settings of a DETR head (``transformer``, ``positional_encoding``,
``train_cfg``, ``test_cfg``), each bound to a frozen class as in ``configs``: an unknown key gets
a did-you-mean, a setting okc does not implement is refused with the reason. Errors are
``ParamError``\\ s keyed by the dotted path inside the head's params
(``transformer.encoder.transformerlayers.attn_cfgs.0.num_heads``).

mmcv spread a transformer over registries (``Transformer`` → ``DetrTransformerEncoder`` /
``DetrTransformerDecoder`` → ``BaseTransformerLayer`` / ``DetrTransformerDecoderLayer`` →
``MultiheadAttention`` + ``FFN``); okc accepts those ``type`` names and builds one fixed
architecture from them (``okc.models.detection.transformer``): DETR's post-norm layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from okc.errors import ParamError
from okc.models.detection.configs import ActCfg, _one_of, parse

ENCODER_ORDER = ("self_attn", "norm", "ffn", "norm")
DECODER_ORDER = ("self_attn", "norm", "cross_attn", "norm", "ffn", "norm")


@attrs.frozen(kw_only=True)
class AttentionCfg:
    """mmcv's ``MultiheadAttention``, run as ``torch.nn.MultiheadAttention``.

    ``attn_drop`` drops attention weights; ``proj_drop`` and the residual dropout both drop the
    output before the residual add. ``dropout`` is mmcv's older spelling that set both
    ``attn_drop`` and the residual dropout (what DETR's configs use).
    """

    type: str = "MultiheadAttention"
    embed_dims: int
    num_heads: int
    dropout: float | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("MultiheadAttention",))
        if self.embed_dims < 1 or self.num_heads < 1 or self.embed_dims % self.num_heads:
            raise ParamError(
                "num_heads",
                f"embed_dims ({self.embed_dims}) must be a positive multiple of num_heads "
                f"({self.num_heads})",
            )
        if self.dropout is not None and self.attn_drop:
            raise ParamError("attn_drop", "set dropout (mmcv's older key) or attn_drop, not both")
        for key in ("dropout", "attn_drop", "proj_drop"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise ParamError(key, f"must be in [0, 1), got {value}")

    @property
    def weights_drop(self) -> float:
        return self.attn_drop if self.dropout is None else self.dropout

    @property
    def residual_drop(self) -> float:
        """Both drop the attention output before the residual add: one dropout of the two."""
        keep = (1.0 - self.proj_drop) * (1.0 - (self.dropout or 0.0))
        return 1.0 - keep


def _attentions(value: Any) -> tuple[AttentionCfg, ...]:
    """``attn_cfgs``: one mapping (shared by every attention of the layer) or a list of them."""
    if isinstance(value, (Mapping, AttentionCfg)):
        return (parse(AttentionCfg, value, "attn_cfgs"),)
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise ParamError("attn_cfgs", f"expected a mapping or a list of mappings, got {value!r}")
    return tuple(parse(AttentionCfg, v, f"attn_cfgs.{i}") for i, v in enumerate(value))


@attrs.frozen(kw_only=True)
class LayerNormCfg:
    """mmcv's ``norm_cfg`` of a transformer layer: LayerNorm only (what DETR uses)."""

    type: str = "LN"
    eps: float = 1e-5

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("LN",), " (transformer layers use LayerNorm)")


@attrs.frozen(kw_only=True)
class TransformerLayerCfg:
    """mmcv's ``BaseTransformerLayer`` / mmdet's ``DetrTransformerDecoderLayer``.

    ``operation_order`` must be DETR's post-norm order (encoder ``[self_attn, norm, ffn, norm]``,
    decoder ``[self_attn, norm, cross_attn, norm, ffn, norm]``); other orders (pre-norm, extra
    attentions) are refused rather than approximated. The FFN is ``ffn_num_fcs`` linear layers
    (``embed_dims`` → ``feedforward_channels`` ... → ``embed_dims``) with ``act_cfg`` between and
    ``ffn_dropout`` after each activation and after the last layer, then the residual add.
    """

    type: str = "BaseTransformerLayer"
    attn_cfgs: tuple[AttentionCfg, ...] = attrs.field(converter=_attentions)
    operation_order: Sequence[str]
    feedforward_channels: int = 1024
    ffn_dropout: float = 0.0
    ffn_num_fcs: int = 2
    act_cfg: ActCfg = attrs.field(
        factory=lambda: ActCfg(type="ReLU"), converter=lambda v: parse(ActCfg, v, "act_cfg")
    )
    norm_cfg: LayerNormCfg = attrs.field(
        factory=LayerNormCfg, converter=lambda v: parse(LayerNormCfg, v, "norm_cfg")
    )

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("BaseTransformerLayer", "DetrTransformerDecoderLayer"))
        if self.feedforward_channels < 1 or self.ffn_num_fcs < 2:
            raise ParamError(
                "feedforward_channels", "need feedforward_channels >= 1 and ffn_num_fcs >= 2"
            )
        if not 0.0 <= self.ffn_dropout < 1.0:
            raise ParamError("ffn_dropout", f"must be in [0, 1), got {self.ffn_dropout}")
        dims = {a.embed_dims for a in self.attn_cfgs}
        if len(dims) != 1:
            raise ParamError("attn_cfgs", f"every attention needs the same embed_dims, got {dims}")

    @property
    def embed_dims(self) -> int:
        return self.attn_cfgs[0].embed_dims

    def attention(self, i: int) -> AttentionCfg:
        """The config of the layer's ``i``-th attention (one mapping serves them all)."""
        return self.attn_cfgs[0] if len(self.attn_cfgs) == 1 else self.attn_cfgs[i]

    def check_order(self, expected: tuple[str, ...], what: str) -> None:
        if tuple(self.operation_order) != expected:
            raise ParamError(
                "operation_order",
                f"the {what} runs DETR's post-norm layer {list(expected)}; "
                f"{list(self.operation_order)} is not supported",
            )
        attentions = sum(op.endswith("attn") for op in expected)
        if len(self.attn_cfgs) not in (1, attentions):
            raise ParamError(
                "attn_cfgs",
                f"{len(self.attn_cfgs)} attention configs for {attentions} attentions: give one "
                f"mapping or a list of {attentions}",
            )


def _layer(value: Any) -> TransformerLayerCfg:
    return parse(TransformerLayerCfg, value, "transformerlayers")


@attrs.frozen(kw_only=True)
class EncoderCfg:
    """mmdet's ``DetrTransformerEncoder``: ``num_layers`` copies of ``transformerlayers``."""

    type: str = "DetrTransformerEncoder"
    num_layers: int
    transformerlayers: TransformerLayerCfg = attrs.field(converter=_layer)

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("DetrTransformerEncoder",))
        if self.num_layers < 0:
            raise ParamError("num_layers", f"must be >= 0, got {self.num_layers}")
        try:
            self.transformerlayers.check_order(ENCODER_ORDER, "encoder")
        except ParamError as err:
            raise ParamError(f"transformerlayers.{err.key}", err.message) from None


_LN = {"type": "LN"}


@attrs.frozen(kw_only=True)
class DecoderCfg:
    """mmdet's ``DetrTransformerDecoder``: ``num_layers`` layers, then ``post_norm_cfg`` (a
    LayerNorm; null: none). ``return_intermediate`` gives every layer's (normed) output, which
    the head turns into auxiliary losses; otherwise only the last layer's."""

    type: str = "DetrTransformerDecoder"
    num_layers: int
    transformerlayers: TransformerLayerCfg = attrs.field(converter=_layer)
    return_intermediate: bool = False
    post_norm_cfg: LayerNormCfg | None = attrs.field(
        default=_LN,
        converter=lambda v: None if v is None else parse(LayerNormCfg, v, "post_norm_cfg"),
    )

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("DetrTransformerDecoder",))
        if self.num_layers < 1:
            raise ParamError("num_layers", f"must be >= 1, got {self.num_layers}")
        try:
            self.transformerlayers.check_order(DECODER_ORDER, "decoder")
        except ParamError as err:
            raise ParamError(f"transformerlayers.{err.key}", err.message) from None


@attrs.frozen(kw_only=True)
class TransformerCfg:
    """mmdet's ``Transformer`` (DETR's): an encoder over the feature map and a decoder of
    learned queries attending to it. Encoder and decoder share ``embed_dims``."""

    type: str = "Transformer"
    encoder: EncoderCfg = attrs.field(converter=lambda v: parse(EncoderCfg, v, "encoder"))
    decoder: DecoderCfg = attrs.field(converter=lambda v: parse(DecoderCfg, v, "decoder"))

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("Transformer",))
        enc, dec = self.encoder.transformerlayers, self.decoder.transformerlayers
        if enc.embed_dims != dec.embed_dims:
            raise ParamError(
                "decoder.transformerlayers.attn_cfgs",
                f"embed_dims {dec.embed_dims} differs from the encoder's {enc.embed_dims}",
            )

    @property
    def embed_dims(self) -> int:
        return self.encoder.transformerlayers.embed_dims


@attrs.frozen(kw_only=True)
class PositionalEncodingCfg:
    """mmcv's ``SinePositionalEncoding``: ``num_feats`` sine/cosine features per axis (so
    ``2 * num_feats`` must equal the transformer's ``embed_dims``). With ``normalize`` the
    positions are scaled to ``[0, scale]`` over the unpadded extent (``offset`` added first)."""

    type: str = "SinePositionalEncoding"
    num_feats: int
    temperature: float = 10000
    normalize: bool = False
    scale: float = 2 * 3.141592653589793
    eps: float = 1e-6
    offset: float = 0.0

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("SinePositionalEncoding",))
        if self.num_feats < 1:
            raise ParamError("num_feats", f"must be >= 1, got {self.num_feats}")


@attrs.frozen(kw_only=True)
class CostCfg:
    """One term of the Hungarian matching cost (mmdet's match costs), times ``weight``:

    - ``ClassificationCost``: minus the softmax probability of the box's class;
    - ``BBoxL1Cost``: L1 distance of the boxes normalised by the image size, as ``cx, cy, w, h``
      (``box_format: xywh``, DETR's) or ``x1, y1, x2, y2`` (``xyxy``);
    - ``IoUCost``: minus the ``giou`` (or ``iou``) of the boxes in pixels.
    """

    type: str
    weight: float = 1.0
    box_format: str | None = None
    iou_mode: str | None = None

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("ClassificationCost", "BBoxL1Cost", "IoUCost"),
                " (DETRHead classifies with a softmax; FocalLossCost is for sigmoid heads)"
                if self.type == "FocalLossCost" else "")  # fmt: skip
        if self.box_format is not None and self.type != "BBoxL1Cost":
            raise ParamError("box_format", f"only BBoxL1Cost has box_format, not {self.type}")
        if self.iou_mode is not None and self.type != "IoUCost":
            raise ParamError("iou_mode", f"only IoUCost has iou_mode, not {self.type}")
        if self.box_format is not None:
            _one_of("box_format", self.box_format, ("xywh", "xyxy"))
        if self.iou_mode is not None:
            _one_of("iou_mode", self.iou_mode, ("giou", "iou"))
        if self.weight < 0:
            raise ParamError("weight", f"must be >= 0, got {self.weight}")


def _cost(kind: str, key: str) -> Any:
    def convert(value: Any) -> CostCfg:
        cfg = parse(CostCfg, value, key)
        if cfg.type != kind:
            raise ParamError(f"{key}.type", f"the {key} is a {kind}, got {cfg.type!r}")
        return cfg

    return convert


@attrs.frozen(kw_only=True)
class HungarianAssignerCfg:
    """mmdet's ``HungarianAssigner``: per image, the one-to-one query ↔ box matching of least
    total ``cls_cost + reg_cost + iou_cost`` (defaults: mmdet's, weights 1)."""

    type: str = "HungarianAssigner"
    cls_cost: CostCfg = attrs.field(
        factory=lambda: CostCfg(type="ClassificationCost"),
        converter=_cost("ClassificationCost", "cls_cost"),
    )
    reg_cost: CostCfg = attrs.field(
        factory=lambda: CostCfg(type="BBoxL1Cost"), converter=_cost("BBoxL1Cost", "reg_cost")
    )
    iou_cost: CostCfg = attrs.field(
        factory=lambda: CostCfg(type="IoUCost"), converter=_cost("IoUCost", "iou_cost")
    )

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("HungarianAssigner",))

    @property
    def box_format(self) -> str:
        return self.reg_cost.box_format or "xyxy"

    @property
    def iou_mode(self) -> str:
        return self.iou_cost.iou_mode or "giou"


@attrs.frozen(kw_only=True)
class DetrTrainCfg:
    """mmdet's ``train_cfg`` of DETR: the ``assigner`` (DETR samples nothing: every query
    learns, matched ones their box, the rest background)."""

    assigner: HungarianAssignerCfg = attrs.field(
        factory=HungarianAssignerCfg,
        converter=lambda v: parse(HungarianAssignerCfg, v, "assigner"),
    )


@attrs.frozen(kw_only=True)
class DetrTestCfg:
    """mmdet's ``test_cfg`` of DETR: keep the ``max_per_img`` queries of highest class
    probability (no NMS, no score threshold: DETR's queries do not duplicate)."""

    __test__ = False  # not a pytest class

    max_per_img: int = 100

    def __attrs_post_init__(self) -> None:
        if self.max_per_img < 1:
            raise ParamError("max_per_img", f"must be at least 1, got {self.max_per_img}")
