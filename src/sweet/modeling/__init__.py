"""Multi-exit classifiers over any Hugging Face encoder, trained as Early-Exit, SWEET or Multi-Model.

Methods (an explicit choice; there is no default). The paper's three are below; the candidates beyond the
paper (``grad_scale@ALPHA``, ``pcgrad``, ``sweet_then_ee@F``, ``ee_then_sweet@F``, ``distill@W``,
``ee_anchor@F``, ``own@RHO``) and the method-name grammar are described in :mod:`sweet.methods`; partial ownership
(``own@RHO``) trains through :mod:`sweet.modeling.ownership`:

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

from .config import (
    CONFIG_NAME,
    FORMAT_VERSION,
    METHODS,
    PICKLE_MAGIC,
    POOLINGS,
    WEIGHTS_NAME,
    MultiExitConfig,
    MultiExitOutput,
    refuse_pickle,
    validate_exit_layers,
)
from .model import MultiExitModel
from .parts import (
    ExitHead,
    ExitPredictor,
    backbone_input_names,
    drop_pooler,
    find_layer_list,
    truncate,
)
from .segments import FirstSegmentModule, SegmentModule, SegmentRunner

__all__ = [
    "CONFIG_NAME", "FORMAT_VERSION", "METHODS", "PICKLE_MAGIC", "POOLINGS", "WEIGHTS_NAME", "ExitHead", "ExitPredictor",
    "FirstSegmentModule", "MultiExitConfig", "MultiExitModel", "MultiExitOutput", "SegmentModule", "SegmentRunner",
    "backbone_input_names", "drop_pooler", "find_layer_list",
    "refuse_pickle", "truncate", "validate_exit_layers",
]
