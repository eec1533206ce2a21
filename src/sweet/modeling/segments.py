"""Run a shared-backbone multi-exit model segment by segment, with explicit segment functions.

A *segment* is the run of encoder layers from one exit to the next: segment ``s`` runs layers
``[start_s, end_s)`` (0-based) and ends at exit ``s``. :class:`SegmentRunner` computes the embeddings once
(:meth:`~SegmentRunner.embed`) and then each segment on the hidden state the previous one produced
(:meth:`~SegmentRunner.run`), calling the encoder's layers directly instead of the backbone's own forward. What
each encoder computes once per forward, before its first layer, is computed once per call of ``run`` from the
attention mask (cheap next to the layers):

* BERT (MiniLM included): the attention mask the model itself builds (``create_bidirectional_mask``, for its
  attention implementation);
* MPNet: that mask, and the relative position bias (``encoder.compute_position_bias``);
* DeBERTa-v2: its pairwise attention mask, relative positions and (normalised) relative embeddings; its
  convolution follows layer 1 only, on the embeddings, so it belongs to the segment that holds layer 1.

The exit representation a segment returns is exactly what :class:`~sweet.modeling.MultiExitModel` hands exit head
``s`` (the input of the layer after the exit; the encoder's output for the last exit); tested equal for the three
encoders, with padding.

:class:`FirstSegmentModule` (embeddings + segment 0 + exit head 0) and :class:`SegmentModule` (segment ``s`` + exit
head ``s``) wrap them as ``nn.Module`` s without Python control flow on tensor values, for ``torch.onnx`` export.

Other encoders are not supported here (:func:`SegmentRunner.supports` says so, the constructor raises a
:class:`~sweet.errors.SweetError`); :class:`~sweet.inference.EarlyExitEngine` runs them through the backbone's own
forward instead.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from ..errors import SweetError
from .parts import find_layer_list

#: Encoder families (``config.model_type``) whose segments run explicitly.
SUPPORTED_ENCODERS = ("bert", "mpnet", "deberta-v2")


def _encoder_kind(backbone: nn.Module) -> str | None:
    config = getattr(backbone, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_ENCODERS:
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if kind == "deberta-v2" and int(getattr(backbone, "z_steps", 0) or 0) > 1:
        return None  # DeBERTa's enhanced mask decoder re-runs the last layer: not a plain stack of layers
    return kind


class SegmentRunner:
    """Run a shared-backbone MultiExitModel segment by segment, without the backbone's own forward.

    >>> runner = SegmentRunner(model)
    >>> hidden = runner.embed(input_ids, attention_mask)            # [B, T, d]
    >>> for s in range(len(runner.segments)):
    ...     hidden = runner.run(s, hidden, attention_mask)          # what exit head s reads
    ...     logits, pooled = model.heads[s](hidden, attention_mask)
    """

    def __init__(self, model: nn.Module):  # a MultiExitModel (sweet.modeling.model imports this module)
        if not model.method_spec.shares_backbone:
            raise SweetError(f"segments run on a shared backbone; method {model.config.method} has one model per exit")
        backbone = model.backbones[0]
        kind = _encoder_kind(backbone)
        if kind is None:
            name = getattr(getattr(backbone, "config", None), "model_type", type(backbone).__name__)
            raise SweetError(f"segment-by-segment execution supports {', '.join(SUPPORTED_ENCODERS)} encoders, "
                             f"not {name}")
        self.model = model
        self.backbone = backbone
        self.kind = kind
        self.layers = find_layer_list(backbone)
        self.encoder = backbone.encoder
        self.takes_token_type_ids = "token_type_ids" in model._inputs
        ends = list(model.exit_layers)
        self.segments: list[tuple[int, int]] = list(zip([0, *ends[:-1]], ends))

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` can run segment by segment (a shared backbone of a supported encoder family)."""
        return bool(model.method_spec.shares_backbone) and _encoder_kind(model.backbones[0]) is not None

    # ------------------------------------------------------------------------------------------ embeddings

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The embeddings output [B, T, d]: the input of layer 1, as the backbone's forward computes it."""
        kwargs = {"input_ids": input_ids}
        if token_type_ids is not None and self.takes_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        if self.kind == "deberta-v2":  # its embeddings zero the padded positions
            kwargs["mask"] = attention_mask
        return self.backbone.embeddings(**kwargs)

    # ------------------------------------------------------------------------------------------ segments

    def run(self, s: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Layers of segment ``s`` on ``hidden`` (the input of its first layer, [B, T, d]); returns exit ``s``'s
        representation [B, T, d]. ``attention_mask`` [B, T] marks the real positions (1) and the padding (0)."""
        start, end = self.segments[s]
        if self.kind == "bert":
            mask = self._bert_mask(hidden, attention_mask)
            for layer in self.layers[start:end]:
                hidden = _first(layer(hidden, mask))
            return hidden
        if self.kind == "mpnet":
            mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                             attention_mask=attention_mask)
            bias = self.encoder.compute_position_bias(hidden)
            for layer in self.layers[start:end]:
                hidden = _first(layer(hidden, mask, bias))
            return hidden
        return self._run_deberta(start, end, hidden, attention_mask)

    def _bert_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        """The attention mask BERT's own forward hands its layers. For SDPA attention that is the padding mask as
        booleans, or None when no position is padded; ``create_bidirectional_mask`` builds it as a [B, 1, T, T]
        tensor through index arithmetic (5-11 ms a call measured under load on 2 cores, paid once per segment), so it is
        built here as the [B, 1, 1, T] view SDPA broadcasts (the same layer outputs, bit for bit: tested). Other
        attention implementations (and tracing, for the ONNX export) get the model's own mask."""
        config = self.backbone.config
        if getattr(config, "_attn_implementation", None) != "sdpa" or torch.jit.is_tracing() \
                or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)
        if attention_mask is None or bool(attention_mask.all()):
            return None
        return attention_mask.to(device=hidden.device, dtype=torch.bool)[:, None, None, :]

    def _run_deberta(self, start: int, end: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        mask = enc.get_attention_mask(attention_mask)
        rel_pos = enc.get_rel_pos(hidden)
        rel_embeddings = enc.get_rel_embedding()
        embeddings = hidden
        for i in range(start, end):
            hidden = _first(self.layers[i](hidden, mask, query_states=None, relative_pos=rel_pos,
                                           rel_embeddings=rel_embeddings, output_attentions=False))
            if i == 0 and enc.conv is not None:  # the encoder's convolution follows layer 1 only
                hidden = enc.conv(embeddings, hidden, attention_mask)
        return hidden

    def modules_of(self, s: int) -> dict[str, nn.Module]:
        """The modules segment ``s`` uses besides its layers (relative-position tables, DeBERTa-v2's encoder
        LayerNorm and, for the segment holding layer 1, its convolution), by name; for registering them in
        :class:`SegmentModule`."""
        names = {"mpnet": ("relative_attention_bias",), "deberta-v2": ("rel_embeddings", "LayerNorm", "conv")}
        out = {}
        for name in names.get(self.kind, ()):
            mod = getattr(self.encoder, name, None)
            if isinstance(mod, nn.Module) and not (name == "conv" and self.segments[s][0] > 0):
                out[name] = mod
        return out


def _first(out):
    """A layer's hidden-state output (some layers return a tuple with their attention weights)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class SegmentModule(nn.Module):
    """Segment ``s`` (``s >= 1``) and exit head ``s`` as one module: (hidden, attention_mask) -> (hidden_out,
    logits). ``hidden_out`` is exit ``s``'s representation (the next segment's input); logits are float32."""

    def __init__(self, runner: SegmentRunner, s: int):
        super().__init__()
        if not 1 <= s < len(runner.segments):
            raise SweetError(f"segment {s} does not exist or takes token ids (segments 1..{len(runner.segments) - 1} "
                             "take a hidden state; segment 0 is FirstSegmentModule)")
        self.runner = runner
        self.index = s
        # registered, so that .to()/.state_dict() see the parameters this module uses
        self.layers = nn.ModuleList(runner.layers[runner.segments[s][0] : runner.segments[s][1]])
        self.shared = nn.ModuleDict(runner.modules_of(s))
        self.head = runner.model.heads[s]

    def forward(self, hidden, attention_mask):
        out = self.runner.run(self.index, hidden, attention_mask)
        logits, _ = self.head(out, attention_mask)
        return out, logits


class FirstSegmentModule(nn.Module):
    """Embeddings, segment 0 and exit head 0 as one module: (input_ids, attention_mask[, token_type_ids]) ->
    (hidden_out, logits)."""

    def __init__(self, runner: SegmentRunner):
        super().__init__()
        self.runner = runner
        self.embeddings = runner.backbone.embeddings
        self.layers = nn.ModuleList(runner.layers[runner.segments[0][0] : runner.segments[0][1]])
        self.shared = nn.ModuleDict(runner.modules_of(0))
        self.head = runner.model.heads[0]

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.runner.embed(input_ids, attention_mask, token_type_ids)
        out = self.runner.run(0, hidden, attention_mask)
        logits, _ = self.head(out, attention_mask)
        return out, logits
