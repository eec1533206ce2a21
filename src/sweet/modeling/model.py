"""``MultiExitModel``: one or several backbones with an exit head after each exit layer (see :mod:`sweet.modeling`)."""

from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from ..backbones import exit_layers_for, resolve_backbone, resolve_pooling
from ..errors import SweetError
from ..gradients import anchor_loss, distillation_loss, scale_grad
from ..io import atomic_write_json
from ..methods import Method, check_method, parse_method
from ..modelcard import write_model_card
from .config import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    MultiExitConfig,
    MultiExitOutput,
    refuse_pickle,
    validate_exit_layers,
)
from .ownership import Ownership, owned_representations
from .parts import (
    ExitHead,
    ExitPredictor,
    backbone_input_names,
    drop_pooler,
    find_layer_list,
    truncate,
)


class MultiExitModel(nn.Module):
    """A transformer encoder with a classifier after each exit layer. See the module docstring."""

    def __init__(self, config: MultiExitConfig, backbones: Sequence[nn.Module] | None = None):
        super().__init__()
        self.config = config
        self.method_spec: Method = parse_method(config.method)
        hf_config_dict = dict(config.backbone_config)
        model_type = hf_config_dict.pop("model_type", None)
        if model_type is None:
            raise SweetError("backbone_config lacks 'model_type'")
        full_depth = int(hf_config_dict.get("num_hidden_layers", 0))
        validate_exit_layers(config.exit_layers, full_depth, config.allow_partial_depth)
        if backbones is None:
            hf_config = AutoConfig.for_model(model_type, **hf_config_dict)
            n = self.method_spec.num_backbones(len(config.exit_layers))
            backbones = [AutoModel.from_config(copy.deepcopy(hf_config)) for _ in range(n)]
        depths = self.method_spec.backbone_depths(config.exit_layers)
        if len(backbones) != len(depths):
            raise ValueError(f"expected {len(depths)} backbone(s), got {len(backbones)}")
        for bb, d in zip(backbones, depths):
            drop_pooler(bb)
            truncate(bb, d)
        self.backbones = nn.ModuleList(backbones)
        hidden = int(hf_config_dict.get("hidden_size"))
        dropout = config.head_dropout
        if dropout is None:
            dropout = float(hf_config_dict.get("hidden_dropout_prob", 0.1) or 0.0)
        init_std = float(hf_config_dict.get("initializer_range", 0.02))
        self.heads = nn.ModuleList(
            ExitHead(hidden, config.num_labels, dropout, config.pooling, init_std) for _ in config.exit_layers
        )
        self._inputs = backbone_input_names(self.backbones[0])
        object.__setattr__(self, "_anchor", None)  # not a submodule (see the anchor property)
        #: own@RHO: the heads and FFN units each exit owns (None: no unit is owned, every other method)
        self.ownership: Ownership | None = Ownership.of(self)
        self.set_progress(1.0)
        if config.exit_predictors:
            self.add_exit_predictors()

    def add_exit_predictors(self) -> nn.ModuleList:
        """Create (zero-initialised) learning-to-exit modules, one per exit, if there are none yet; they are
        saved with the model (``exit_predictors.{i}.*`` in model.safetensors). See :mod:`sweet.learn_exit`."""
        if getattr(self, "exit_predictors", None) is None:
            hidden = int(self.config.backbone_config.get("hidden_size"))
            self.exit_predictors = nn.ModuleList(ExitPredictor(hidden) for _ in self.config.exit_layers)
            self.config.exit_predictors = True
        return self.exit_predictors

    # ------------------------------------------------------------------ construction and persistence

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        *,
        exit_layers: Sequence[int] | None = None,
        num_labels: int,
        method: str,
        pooling: str = "auto",
        head_dropout: float | None = None,
        allow_partial_depth: bool = False,
        label_names: Sequence[str] | None = None,
        task: str | None = None,
        **from_pretrained_kwargs: Any,
    ) -> "MultiExitModel":
        """Load a pretrained encoder (hub id, local directory, or a packaged alias such as ``default``)
        and put heads after ``exit_layers``. ``method`` is required: early_exit, sweet or multi_model.
        ``pooling``: cls, mean, or auto (the backbone's own pretraining pooling if it declares one, else cls)."""
        method = check_method(method)
        path = resolve_backbone(name_or_path)
        pooling = resolve_pooling(pooling, path)
        try:
            base = AutoModel.from_pretrained(path, **from_pretrained_kwargs)
        except OSError as exc:
            raise SweetError(f"cannot load backbone '{name_or_path}': {exc}") from exc
        depth = int(base.config.num_hidden_layers)
        layers = exit_layers_for(exit_layers, depth)
        layers = validate_exit_layers(layers, depth, allow_partial_depth)
        config = MultiExitConfig(
            method=method,
            exit_layers=layers,
            num_labels=int(num_labels),
            backbone=str(name_or_path),
            backbone_config=base.config.to_dict(),
            pooling=pooling,
            head_dropout=head_dropout,
            allow_partial_depth=allow_partial_depth,
            label_names=list(label_names) if label_names is not None else None,
            task=task,
        )
        copies = parse_method(method).num_backbones(len(layers)) - 1  # one model per exit: the pretrained one last
        backbones = [copy.deepcopy(base) for _ in range(copies)] + [base]
        return cls(config, backbones)

    def save_pretrained(self, directory: str | os.PathLike, tokenizer=None) -> Path:
        """Write ``sweet_config.json``, ``model.safetensors`` (and the tokenizer, if given) and the model card
        (``README.md``, :mod:`sweet.modelcard`; a run refreshes it with its metrics). Nothing is pickled."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp), metadata={"format": "pt", "sweet_format_version": str(FORMAT_VERSION)})
        os.replace(tmp, directory / WEIGHTS_NAME)
        atomic_write_json(directory / CONFIG_NAME, self.config.to_dict())
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
        write_model_card(directory, self.config)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "MultiExitModel":
        """Load a model written by :meth:`save_pretrained` (safetensors only; pickle files are refused)."""
        directory = Path(directory)
        cfg_path = directory / CONFIG_NAME
        weights = directory / WEIGHTS_NAME
        if not directory.is_dir():
            raise SweetError(f"model directory not found: {directory}")
        if not cfg_path.is_file():
            raise SweetError(f"{directory} is not a sweet model directory: {CONFIG_NAME} is missing")
        if not weights.is_file():
            pickled = [p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
            hint = f" (found {', '.join(pickled)}: pickle files are never loaded)" if pickled else ""
            raise SweetError(f"{directory}: weights file {WEIGHTS_NAME} is missing{hint}")
        try:
            config = MultiExitConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise SweetError(f"{cfg_path}: not valid JSON ({exc})") from exc
        except SweetError as exc:
            raise SweetError(f"{cfg_path}: {exc}") from exc
        model = cls(config)
        refuse_pickle(weights)
        try:
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
            raise SweetError(f"{weights}: not a readable safetensors file ({exc}); re-save or re-train the model") from exc
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensor shapes differ from the config, e.g. an edited num_labels
            first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
            raise SweetError(f"{weights} does not match {CONFIG_NAME} ({first})") from exc
        if missing or unexpected:
            raise SweetError(
                f"{weights} does not match {CONFIG_NAME}: missing {len(missing)} tensor(s) "
                f"{missing[:3]}, unexpected {len(unexpected)} {unexpected[:3]}"
            )
        model.eval()
        return model

    # ----------------------------------------------------------------------------------- forward

    @property
    def exit_layers(self) -> list[int]:
        return list(self.config.exit_layers)

    @property
    def num_exits(self) -> int:
        return len(self.config.exit_layers)

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """Sets of parameters trained as one unit (gradient clipping is applied per group): the whole
        model on a shared backbone (early_exit, sweet, ...), each (backbone, head) pair with one model per exit
        (multi_model)."""
        if not self.method_spec.shares_backbone:
            return [list(bb.parameters()) + list(h.parameters()) for bb, h in zip(self.backbones, self.heads)]
        return [list(self.parameters())]

    def set_progress(self, progress: float) -> None:
        """Tell the model how far training is (fraction of steps done), for scheduled methods. Sets
        :attr:`boundary_scales`: how much of a later exit's gradient crosses each exit boundary (0 = SWEET,
        1 = Early-Exit; None for Multi-Model). Forward values never depend on it."""
        self.boundary_scales = self.method_spec.boundary_scales(progress, self.num_exits - 1)

    @property
    def gradient_scale(self) -> float | None:
        """The first exit boundary's gradient scale (None for Multi-Model); see :meth:`set_progress`."""
        return None if self.boundary_scales is None else (self.boundary_scales or (1.0,))[0]

    @property
    def anchor(self) -> "MultiExitModel | None":
        """``ee_anchor@F``: the frozen copy of this model that exits 2..M are tied to from the switch on
        (:meth:`freeze_anchor`); None before the switch, after training, and for every other method. It is held
        outside the module tree, so it is in neither ``parameters()`` (not optimized, not clipped) nor
        ``state_dict()`` (:meth:`save_pretrained` writes the model alone; training checkpoints save it
        themselves, :mod:`sweet.checkpoint`)."""
        return self.__dict__.get("_anchor")

    def freeze_anchor(self, state: dict[str, torch.Tensor] | None = None) -> "MultiExitModel":
        """Take the anchor: a deep copy of this model as it is now (resuming: with the weights ``state`` a
        checkpoint saved), in eval mode (no dropout) and with no gradient. Returns it."""
        if self.method_spec.anchor_from is None:
            raise SweetError(f"method {self.config.method} trains without an anchor")
        object.__setattr__(self, "_anchor", None)  # not copied into the anchor
        anchor = copy.deepcopy(self)
        if state is not None:
            anchor.load_state_dict(state, strict=True)
        anchor.requires_grad_(False).eval()
        object.__setattr__(self, "_anchor", anchor)
        return anchor

    def release_anchor(self) -> None:
        """Drop the anchor (training is over)."""
        object.__setattr__(self, "_anchor", None)

    def gradient_blocks(self) -> list[list[nn.Parameter]]:
        """The model's parameters cut into blocks for per-block gradient surgery (``pcgrad``): the embeddings,
        each encoder layer, the rest of each backbone (e.g. shared relative-position tables), each head and each
        exit predictor. Every parameter is in exactly one block."""
        blocks: list[list[nn.Parameter]] = []
        for bb in self.backbones:
            layers = find_layer_list(bb)
            seen = {id(p) for p in layers.parameters()}
            emb = getattr(bb, "embeddings", None)
            if emb is not None:
                blocks.append(list(emb.parameters()))
                seen |= {id(p) for p in emb.parameters()}
            blocks.extend(list(layer.parameters()) for layer in layers)
            blocks.append([p for p in bb.parameters() if id(p) not in seen])
        blocks.extend(list(h.parameters()) for h in self.heads)
        if getattr(self, "exit_predictors", None) is not None:
            blocks.extend(list(m.parameters()) for m in self.exit_predictors)
        return [b for b in blocks if b]

    def _backbone_kwargs(self, input_ids, attention_mask, token_type_ids) -> dict:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self._inputs:
            kwargs["token_type_ids"] = token_type_ids
        return kwargs

    @contextmanager
    def _exit_hooks(self, captured: list):
        """Record the hidden state entering the layer after each non-final exit; for SWEET, detach what
        is passed on (see module docstring); for a gradient scale strictly between 0 and 1, scale the gradient
        of what is passed on (sweet.gradients.scale_grad), at each boundary by that boundary's scale."""
        layers = find_layer_list(self.backbones[0])
        scales = tuple(float(x) for x in self.boundary_scales or ())
        gated = any(x != 1.0 for x in scales)  # any gradient gating at the boundaries (0: detach, as SWEET)
        scale = scales[0] if scales else 1.0  # shared tensors: the first boundary's scale (see below)
        boundaries = {layer: i for i, layer in enumerate(self.config.exit_layers[:-1])}  # 0-based next-layer index
        first_exit = self.config.exit_layers[0]
        handles = []

        def make_hook(index: int):
            def hook(module, args, kwargs):
                if args:
                    hidden, rest_args = args[0], list(args[1:])
                    in_kwargs = False
                else:
                    hidden, rest_args, in_kwargs = kwargs["hidden_states"], [], True
                if index in boundaries:
                    captured.append(hidden)
                if not gated:
                    return None
                if index in boundaries:
                    hidden = scale_grad(hidden, scales[boundaries[index]])
                # shared tensors (relative-position tables): gated at every layer after the first exit, so the
                # gradient of layers past exit 1 reaches them scaled once, like the hidden state at exit 1
                detach = lambda v: scale_grad(v, scale) if torch.is_tensor(v) and v.requires_grad else v  # noqa: E731
                rest_args = [detach(v) for v in rest_args]
                kwargs = {k: detach(v) for k, v in kwargs.items()}
                if in_kwargs:
                    kwargs["hidden_states"] = hidden
                    return tuple(rest_args), kwargs
                return (hidden, *rest_args), kwargs

            return hook

        for index in range(first_exit, len(layers)):
            if gated or index in boundaries:
                handles.append(layers[index].register_forward_pre_hook(make_hook(index), with_kwargs=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> MultiExitOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = self._backbone_kwargs(input_ids, attention_mask, token_type_ids)
        if not self.method_spec.shares_backbone:
            reps = [bb(**kwargs).last_hidden_state for bb in self.backbones]
        elif self.ownership is not None and torch.is_grad_enabled():  # own@RHO's gradients (forward values: EE's)
            reps = owned_representations(self, self.ownership, input_ids, attention_mask, token_type_ids)
        else:
            captured: list[torch.Tensor] = []
            with self._exit_hooks(captured):
                last = self.backbones[0](**kwargs).last_hidden_state
            reps = [*captured, last]
            if len(reps) != self.num_exits:  # an encoder that does not call its layers as modules
                raise SweetError(f"captured {len(reps)} exit representations, expected {self.num_exits}")
        logits, pooled = zip(*(head(rep, attention_mask) for head, rep in zip(self.heads, reps)))
        loss = exit_losses = tied = None
        if labels is not None:
            exit_losses = tuple(F.cross_entropy(lg, labels) for lg in logits)
            loss = torch.stack(exit_losses).sum()
            if self.method_spec.distill_weight > 0 and len(logits) > 1:
                loss = loss + distillation_loss(logits, self.method_spec.distill_weight)
            if self.anchor is not None:  # ee_anchor@F after the switch: exits 2..M tied to the anchor's logits
                with torch.no_grad():
                    anchored = self.anchor(input_ids=input_ids, attention_mask=attention_mask,
                                           token_type_ids=token_type_ids).logits
                tied = anchor_loss(logits, anchored)
                loss = loss + tied
        return MultiExitOutput(
            logits=tuple(logits), loss=loss, exit_losses=exit_losses, hidden=tuple(pooled) if return_hidden else None,
            anchor_loss=tied,
        )
