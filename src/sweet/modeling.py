"""Multi-exit classifiers over any Hugging Face encoder, trained as Early-Exit, SWEET or Multi-Model.

Methods (an explicit choice; there is no default). The paper's three are below; the candidates beyond the
paper (``grad_scale@ALPHA``, ``pcgrad``, ``sweet_then_ee@F``, ``ee_then_sweet@F``, ``distill@W``) and the
method-name grammar are described in :mod:`sweet.methods`:

``early_exit``
    One encoder, one classifier head after each exit layer. Loss = unweighted sum of the heads'
    cross-entropies, so every head's gradient reaches every layer below it.
``sweet``
    Same network and loss, and identical forward values, but the hidden state handed on to the layer
    after an exit is a *detached* copy. Exit *i*'s gradient therefore reaches only the layers after exit
    *i-1* up to its own layer (and its head). The embeddings and the layers up to the first exit are
    trained by the first exit alone.
``multi_model``
    Independent copies of the backbone truncated to ``L_i`` layers, one head each. Parameters are
    disjoint, so summing the losses trains each as if alone (and the trainer clips their gradient norms
    separately). At inference they run one after another with no reuse of computation.

How SWEET is implemented
------------------------
A forward *pre*-hook on every encoder layer after the first exit. At the layer that follows an exit, the
incoming hidden state is recorded as that exit's representation (with its gradient path intact, for the
head) and a detached copy is passed into the layer. This works for any encoder whose layers take the
hidden state as first argument, without re-implementing its forward.

Parameters that every layer uses (MPNet's ``relative_attention_bias``, DeBERTa-v2's ``rel_embeddings``
and the encoder LayerNorm applied to them) reach the layers as extra tensor arguments. They are computed
once, before layer 1, so we treat them as part of the *first segment*: the pre-hook also detaches every
other gradient-carrying tensor argument of the layers after the first exit. Under SWEET these shared
parameters are therefore trained by the first exit only, like the embeddings (tested).

Exit representations are taken *between* layers (the input of layer ``L_i + 1``), so anything an encoder
does between layers (e.g. DeBERTa-v2's convolution after layer 1) is included. The last exit reads the
encoder's output. The encoder is truncated to the last exit layer.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from .backbones import default_exit_layers, resolve_backbone, resolve_pooling
from .errors import SweetError
from .gradients import distillation_loss, scale_grad
from .io import atomic_write_json
from .methods import PAPER_METHODS, Method, check_method, parse_method

METHODS = PAPER_METHODS  # the paper's three ('all'); every accepted name: sweet.methods.METHOD_NAMES
POOLINGS = ("cls", "mean")
CONFIG_NAME = "sweet_config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


#: First bytes of files written by pickle (protocol 2-5) or torch.save (a zip archive holding a pickle).
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def refuse_pickle(path: str | os.PathLike) -> None:
    """Refuse, without unpickling anything, a pickle / torch.save file offered where safetensors is expected.
    (Loading goes through safetensors only, which never unpickles; this check just names the problem.)"""
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header
    looks_like_safetensors = len(head) == 9 and head[8:9] == b"{"
    if not looks_like_safetensors and head.startswith(PICKLE_MAGIC):
        raise SweetError(
            f"{path} is a pickle (torch.save) file, not safetensors; sweet never loads pickle because it can run "
            "arbitrary code: convert it with safetensors.torch.save_file in a trusted environment"
        )


def validate_exit_layers(exit_layers: Sequence[int], depth: int, allow_partial_depth: bool = False) -> list[int]:
    """Exit layers must be strictly increasing integers in 1..depth, the last equal to depth unless
    ``allow_partial_depth`` (then the encoder is cut after the last exit)."""
    layers = list(exit_layers)
    if not layers:
        raise SweetError("exit layers are empty; give at least one layer, e.g. --exit-layers 1,2,4,6")
    if any(isinstance(x, bool) or int(x) != x for x in layers):
        raise SweetError(f"exit layers must be integers, got {layers}")
    layers = [int(x) for x in layers]
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise SweetError(f"exit layers must be strictly increasing, got {layers}")
    if layers[0] < 1 or layers[-1] > depth:
        raise SweetError(f"exit layers must lie in 1..{depth} (the backbone's depth), got {layers}")
    if layers[-1] != depth and not allow_partial_depth:
        raise SweetError(
            f"the last exit layer is {layers[-1]} but the backbone has {depth} layers; add {depth} to the exit "
            "layers, or pass allow_partial_depth=True (--allow-partial-depth) to cut the encoder after the last exit"
        )
    return layers


@dataclass
class MultiExitConfig:
    """Everything needed to rebuild a :class:`MultiExitModel` without the original backbone files."""

    method: str
    exit_layers: list[int]
    num_labels: int
    backbone: str  # the name or path it was created from (provenance only)
    backbone_config: dict  # the Hugging Face config of the full backbone
    pooling: str = "cls"
    head_dropout: float | None = None  # None: the backbone's hidden_dropout_prob (or 0.1)
    allow_partial_depth: bool = False
    temperatures: list[float] | None = None  # per-exit temperature, fitted after training
    label_names: list[str] | None = None
    task: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    exit_predictors: bool = False  # learning-to-exit modules present (sweet.learn_exit); older models: absent

    def __post_init__(self) -> None:
        self.method = check_method(self.method)
        if self.pooling not in POOLINGS:
            raise SweetError(f"unknown pooling '{self.pooling}'; choose one of: {', '.join(POOLINGS)}")
        if int(self.num_labels) < 2:
            raise SweetError(f"num_labels must be at least 2, got {self.num_labels}")
        if self.temperatures is not None and len(self.temperatures) != len(self.exit_layers):
            raise SweetError("one temperature per exit is required")

    @property
    def depth(self) -> int:
        """Depth of the model as run: the last exit layer (L_M in the cost formulas)."""
        return self.exit_layers[-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MultiExitConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SweetError(f"model config has unknown key(s): {', '.join(unknown)}")
        missing = [k for k in ("method", "exit_layers", "num_labels", "backbone", "backbone_config") if k not in d]
        if missing:
            raise SweetError(f"model config lacks required key(s): {', '.join(missing)}")
        if int(d.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise SweetError("model was saved by a newer version of sweet; upgrade sweet to load it")
        return cls(**d)


@dataclass
class MultiExitOutput:
    """``logits``: one [batch, num_labels] tensor per exit. ``loss``: sum of the exits' cross-entropies
    (when labels were given); ``exit_losses``: each exit's own. ``hidden``: each exit's pooled
    representation (what learned exit policies read)."""

    logits: tuple[torch.Tensor, ...]
    loss: torch.Tensor | None = None
    exit_losses: tuple[torch.Tensor, ...] | None = None
    hidden: tuple[torch.Tensor, ...] | None = None


class ExitHead(nn.Module):
    """One exit's classifier, with its own pooler: pool -> dense -> tanh -> dropout -> linear."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str, init_std: float):
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        for lin in (self.dense, self.classifier):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pooling == "cls" or attention_mask is None:
            return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # an encoder cast to bf16/fp16 for inference (sweet.precision) feeds this float32 head: pool in float32
        hidden = hidden.to(self.dense.weight.dtype)
        pooled = torch.tanh(self.dense(self.pool(hidden, attention_mask)))
        return self.classifier(self.dropout(pooled)), pooled


class ExitPredictor(nn.Module):
    """Learning-to-exit module of one exit (BERxiT, Xin et al. 2021): Linear(hidden, 1) + sigmoid on the exit's
    pooled representation, predicting whether that exit's prediction is correct. Zero-initialised (no random
    numbers are drawn, so adding it never changes the random stream of anything else)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, hidden_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(pooled.float(), self.weight, self.bias)).squeeze(-1)


# ----------------------------------------------------------------------------------- backbone surgery


def find_layer_list(backbone: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers (BERT/MPNet/DeBERTa: ``encoder.layer``)."""
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer"):
        mod: Any = backbone
        for part in path.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if isinstance(mod, nn.ModuleList):
            return mod
    depth = getattr(backbone.config, "num_hidden_layers", None)
    for _, mod in backbone.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == depth:
            return mod
    raise SweetError(f"cannot find the layer list of {type(backbone).__name__}; it is not a supported encoder")


def truncate(backbone: nn.Module, depth: int) -> nn.Module:
    layers = find_layer_list(backbone)
    if depth > len(layers):
        raise SweetError(f"cannot keep {depth} layers of a {len(layers)}-layer backbone")
    del layers[depth:]
    backbone.config.num_hidden_layers = depth
    return backbone


def drop_pooler(backbone: nn.Module) -> None:
    # Each exit has its own pooler; the backbone's would be shared by all exits (a defect of the
    # reference implementation), so it is removed.
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None


def backbone_input_names(backbone: nn.Module) -> set[str]:
    return set(inspect.signature(backbone.forward).parameters)


# ------------------------------------------------------------------------------------------- the model


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
        layers = default_exit_layers(depth) if exit_layers is None else list(exit_layers)
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
        """Write ``sweet_config.json`` and ``model.safetensors`` (and the tokenizer, if given). Nothing is pickled."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp), metadata={"format": "pt", "sweet_format_version": str(FORMAT_VERSION)})
        os.replace(tmp, directory / WEIGHTS_NAME)
        atomic_write_json(directory / CONFIG_NAME, self.config.to_dict())
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
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
        else:
            captured: list[torch.Tensor] = []
            with self._exit_hooks(captured):
                last = self.backbones[0](**kwargs).last_hidden_state
            reps = [*captured, last]
            if len(reps) != self.num_exits:  # an encoder that does not call its layers as modules
                raise SweetError(f"captured {len(reps)} exit representations, expected {self.num_exits}")
        logits, pooled = zip(*(head(rep, attention_mask) for head, rep in zip(self.heads, reps)))
        loss = exit_losses = None
        if labels is not None:
            exit_losses = tuple(F.cross_entropy(lg, labels) for lg in logits)
            loss = torch.stack(exit_losses).sum()
            if self.method_spec.distill_weight > 0 and len(logits) > 1:
                loss = loss + distillation_loss(logits, self.method_spec.distill_weight)
        return MultiExitOutput(
            logits=tuple(logits), loss=loss, exit_losses=exit_losses, hidden=tuple(pooled) if return_hidden else None
        )
