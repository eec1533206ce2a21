"""Wall-clock benchmark of early-exit inference against its peers (``sweet bench RUN_DIR``).

On the run's evaluation split, in one run, on the same examples and at the same batch size, it times:

* **the full model in torch fp32**, the baseline: the encoder to its last layer plus the last head, no exit
  checks (Multi-Model: the last, full-depth member alone);
* the full model in torch at every other precision asked for (``bf16``, ``int8``: :mod:`sweet.precision`);
* **ONNX Runtime fp32 and int8** (dynamic quantization) running the same full model, exported once to a
  temporary directory (:mod:`sweet.peers`), when the optional extra ``sweet[onnx]`` is installed (otherwise these
  rows are skipped with a note);
* **our engine** (:class:`~sweet.inference.EarlyExitEngine`, full batches at every depth) at every precision and
  every threshold of the policy's grid.

Each row has its throughput and its accuracy (the task metric, on the evaluation labels, from that row's own
predictions); engine rows also the cost ratio (from the exits taken), the ideal speedup 1/cost, the realised
speedup against the torch fp32 full model and the ratio of the two (speedup x cost), the same against the full
model at the row's own precision, and, at precisions other than fp32, the accuracy difference from the fp32
engine at the same threshold. Every row has its throughput relative to ONNX Runtime int8 on the full model, twice:

* **texts in** (``vs ORT int8``, the comparison a user sees): both sides also tokenize the same texts with the
  run's tokenizer (:func:`sweet.encoding.encode`, what ``sweet predict`` does), and the full models also pad their
  batches (the engine pads its own inside its timing). The tokenization is timed as two more configurations of
  each repeat (``tokenize`` and ``tokenize+pad``, recorded under ``tokenization``), and the ratio is the median
  over repeats of (ORT int8 + tokenize + pad) / (row + its preparation), summed within each repeat;
* **model only** (``vs ORT int8 model-only``): both sides on the same pre-tokenised rows.

Protocol: rows are taken in dataset order (no length sorting, as requests would arrive), tokenised before timing.
The full-model rows get the batches pre-padded (a batch is padded to its longest row); the engine gets the
tokenised rows and pads its own batches, so its timings include that collation. Every configuration is warmed
up; then each repeat times every configuration once over the whole split, one after another (interleaved), and a
speedup is the median over repeats of (baseline time / time) *within the same repeat*, so that load from other
processes on a shared machine affects both sides of each ratio alike. Throughput is the number of examples over
the median time. Torch and ONNX Runtime use the same number of threads (ONNX Runtime's ``intra_op_num_threads``),
recorded with the device and precisions.
"""

from .measure import (
    BASELINE,
    TOKENIZE,
    TOKENIZE_PAD,
    benchmark,
    default_precisions,
    parse_precisions,
    runnable_precisions,
)
from .table import format_bench

__all__ = ["BASELINE", "TOKENIZE", "TOKENIZE_PAD", "benchmark", "default_precisions", "format_bench",
           "parse_precisions", "runnable_precisions"]
