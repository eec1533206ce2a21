"""Options shared by several commands, declared once (``Annotated`` aliases), and the parameter types that make
``--help`` show what a value may be.

Choices are declared to the parser (:func:`one_of`): ``--help`` lists them, and a value outside them fails while
the command line is parsed, with the message the library gives for it (docs/errors.md), exit code 2. Number
ranges are shown in ``--help`` (the metavar); the value is checked where it enters the library
(:class:`~sweet.config.RunConfig`, :class:`~sweet.training.TrainConfig`, the predictor, the server), once, with
the message docs/errors.md lists.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional, Sequence

import typer

from ..choices import (
    DEVICE_HELP,
    METRIC_CHOICES,
    PRECISION_HELP,
    PRECISIONS,
    RUNTIMES,
    TRAIN_PRECISION_HELP,
    TRAINING_PRECISIONS,
)
from ..errors import SweetError
from ..methods import METHODS_HELP


def one_of(choices: Sequence[str], message: Callable[[str], str]) -> dict:
    """Option settings for a closed set of values: ``--help`` shows ``[a|b|c]``, and any other value raises
    ``SweetError(message(value))`` while the command line is parsed (one line, exit code 2)."""

    def parse(value: str) -> str:
        if value not in choices:
            raise SweetError(message(value))
        return value

    return {"metavar": "[" + "|".join(choices) + "]", "parser": parse}


def positive_int(flag: str) -> dict:
    """Option settings for an integer >= 1 that no library object checks where it enters."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise SweetError(f"{flag} must be a positive integer, got {value!r}") from None
        if number < 1:
            raise SweetError(f"{flag} must be positive, got {number}")
        return number

    return {"metavar": "INTEGER >= 1", "parser": parse}


def _unknown(what: str, choices: Sequence[str], tail: str = "") -> Callable[[str], str]:
    return lambda value: f"unknown {what} {value!r}{tail}; choose one of: {', '.join(choices)}"


#: metavars that show a number's range in --help (the value is checked where it enters the library)
POSITIVE = "INTEGER >= 1"
NON_NEGATIVE = "INTEGER >= 0"
POSITIVE_FLOAT = "FLOAT > 0"
UNIT_INTERVAL = "FLOAT in [0, 1]"
MIN_TOKENS = "INTEGER >= 8"

POLICIES = ("confidence", "entropy", "patience", "learned")  # sweet.policies.POLICIES (checked by a test)
POOLINGS = ("auto", "cls", "mean")  # sweet.config.POOLING_CHOICES (checked by a test)

DATA_DIR_HELP = "GLUE directory (one folder per task with train.tsv/train_pool.tsv and dev.tsv). Default: $SWEET_GLUE_DIR."
METHOD_HELP = "Fine-tuning method: " + METHODS_HELP + "."
POLICY_HELP = ("Exit policy: confidence (calibrated max probability), entropy (DeeBERT; 1 - normalised entropy), "
               "patience (PABEE; threshold t means patience round(t*(exits-1))) or learned (learning-to-exit; needs a "
               "model trained with --learn-exit).")
THRESHOLD_HELP = ("Threshold in [0, 1]: leave at the first exit whose policy score reaches it (confidence: the calibrated "
                  "max probability; 1 = always run to the last exit).")

Device = Annotated[str, typer.Option(metavar="[auto|cpu|cuda|cuda:N|mps]", help="Device: " + DEVICE_HELP)]
#: the inference precisions as option settings (also for evaluate, whose default is the run's own precision)
PRECISION_CHOICE = one_of(PRECISIONS, _unknown("precision", PRECISIONS))
Precision = Annotated[str, typer.Option(**PRECISION_CHOICE, help="Inference precision: " + PRECISION_HELP)]
TrainPrecision = Annotated[str, typer.Option(
    **one_of(TRAINING_PRECISIONS, lambda v: _unknown(
        "precision", TRAINING_PRECISIONS,
        " (int8 is for inference only; train in fp32 or bf16 and quantize when predicting)" if v == "int8" else "")(v)),
    help="Training precision: " + TRAIN_PRECISION_HELP)]
Policy = Annotated[str, typer.Option(**one_of(POLICIES, _unknown("exit policy", POLICIES)), help=POLICY_HELP)]
Pooling = Annotated[str, typer.Option(
    **one_of(POOLINGS, _unknown("pooling", POOLINGS)),
    help="How each exit pools tokens: cls, mean, or auto (the pooling the backbone was pretrained with if it declares "
         "one, e.g. mean for all-MiniLM-L6-v2; else cls).")]
DataSource = Annotated[str, typer.Option(
    **one_of(("local", "hub"), lambda v: f"unknown data source {v!r}; use 'local' or 'hub'"),
    help="'local' (TSV directory) or 'hub' (Hugging Face glue dataset; needs network).")]
DataDir = Annotated[Optional[Path], typer.Option(help=DATA_DIR_HELP)]
Progress = Annotated[bool, typer.Option(help="Show progress bars.")]
Method = Annotated[str, typer.Option("--method", "-m", help=METHOD_HELP)]
Backbone = Annotated[str, typer.Option(help="'default' (packaged all-MiniLM-L6-v2), a hub id, or a local model directory.")]
ExitLayers = Annotated[Optional[str], typer.Option(
    help="Comma-separated exit layers, e.g. 1,2,4,6; or 'proportional': the paper's proportions at the backbone's "
         "depth (first layer, a third, a half, the last: 1,2,3,6 at 6 layers, 1,4,6,12 at 12). Default: "
         "1,2,4,6 at 6 layers, the paper's ladder at 12 and 24.")]
RUNTIME_HELP = ("Engine runtime: torch, or onnxruntime (the model exported per segment to ONNX and run by ONNX Runtime on "
                "the CPU, fp32 or --precision int8; a run directory is exported on first use into RUN_DIR/onnx/; "
                "needs the onnx extra: pip install 'sweet\\[onnx]'). An exported folder (sweet export) runs with "
                "onnxruntime.")
RUNTIME_CHOICE = one_of(RUNTIMES, _unknown("runtime", RUNTIMES))
Runtime = Annotated[str, typer.Option(**RUNTIME_CHOICE, help=RUNTIME_HELP)]
Threshold = Annotated[float, typer.Option(metavar=UNIT_INTERVAL, help=THRESHOLD_HELP)]
#: the threshold of commands that answer with a trained run: default, the run's tuned one (sweet.tuning)
DefaultThreshold = Annotated[Optional[float], typer.Option(
    "--threshold", metavar=UNIT_INTERVAL,
    help=THRESHOLD_HELP + " Default: the run's threshold chosen by 'sweet tune' for this policy (RUN_DIR/threshold.json), "
                          "else 0.9.")]
Seed = Annotated[int, typer.Option(metavar=NON_NEGATIVE,
                                   help="Seed for the training sample, initialisation, dropout and batch order.")]
LearningRate = Annotated[float, typer.Option("--lr", metavar=POSITIVE_FLOAT, help="Initial learning rate (AdamW, linear decay).")]
Epochs = Annotated[int, typer.Option(metavar=POSITIVE, help="Training epochs.")]
Threads = Annotated[Optional[int], typer.Option(**positive_int("--threads"),
                                                help="torch threads (default: torch's default, usually the core count).")]


DATA_HELP = ("Your own labelled data: a .csv, .tsv, .json, .jsonl or .parquet file, a folder of split files (train.*, "
             "validation.* or dev.*, test.*), a folder written by datasets' save_to_disk, or a Hugging Face hub dataset "
             "id. Columns and labels are detected (see --text-column, --label-column); with --task, that GLUE preset's "
             "columns, labels and metric are read from this source.")
Data = Annotated[Optional[str], typer.Option("--data", help=DATA_HELP)]
EvalData = Annotated[Optional[str], typer.Option("--eval-data", help="A separate labelled evaluation source (same kinds as --data). Default: the data's validation/dev split, else a labelled test split, else a fixed held-out part of the training pool ('held-out train').")]
DataConfig = Annotated[Optional[str], typer.Option("--data-config", help="Hub dataset config name (e.g. --data nyu-mll/glue --data-config sst2).")]
TrainSplit = Annotated[str, typer.Option("--train-split", help="The split to train on (a split folder's file name without extension, or a hub split).")]
EvalSplit = Annotated[Optional[str], typer.Option("--eval-split", help="The split to evaluate on; 'none' holds out part of the training pool instead.")]
TextColumn = Annotated[Optional[str], typer.Option("--text-column", help="The text column (single texts). Default: detected (text, sentence, content, review, ...).")]
TextColumns = Annotated[Optional[str], typer.Option("--text-columns", help="Two text columns for pairs, e.g. premise,hypothesis. Default: detected.")]
LabelColumn = Annotated[Optional[str], typer.Option("--label-column", help="The label column (strings or integers; integers are values, not positions). Default: detected (label, labels, target, class, ...).")]
Metric = Annotated[Optional[str], typer.Option(
    "--metric", **one_of(METRIC_CHOICES, lambda v: f"unknown metric {v!r}; choose one of: {', '.join(METRIC_CHOICES)}"),
    help="The score every table, curve and AUC uses: accuracy, f1_macro, f1 (binary, of --positive-label) or mcc "
         "(Matthews correlation). Default: the preset's (CoLA: mcc), else accuracy.")]
PositiveLabel = Annotated[Optional[str], typer.Option("--positive-label", help="With --metric f1: the positive class's name (default: the class with id 1, the second in sorted order).")]
EVALUATE_DATA_HELP = ("Score the run on this labelled data instead of its own evaluation split: a file (.csv, .tsv, "
                      ".json, .jsonl, .parquet; all its rows), or the evaluation split (--eval-split, else validation, "
                      "dev or test) of a folder of split files, a save_to_disk folder or a hub dataset id. Read with the "
                      "run's text and label columns (a preset run: the task's columns and 'label'); its labels must be "
                      "the run's classes.")
EvaluateData = Annotated[Optional[str], typer.Option("--data", help=EVALUATE_DATA_HELP)]
EvaluateSplit = Annotated[Optional[str], typer.Option("--eval-split", help="With --data: the split to score (default: validation, else dev, else test).")]
DropInvalid = Annotated[bool, typer.Option("--drop-invalid", help="Skip rows with an empty text or label (and say how many, and why) instead of refusing the data.")]


def data_fields(data, eval_data, data_config, train_split, eval_split, text_column, text_columns, label_column,
                metric, positive_label, drop_invalid) -> dict:
    """The own-data fields of a RunConfig from the shared options."""
    if text_column is not None and text_columns is not None:
        raise SweetError("give --text-column (single texts) or --text-columns A,B (pairs), not both")
    columns = [text_column] if text_column is not None else split_flag("--text-columns", text_columns, str)
    return {"data": data, "eval_data": eval_data, "data_config": data_config, "train_split": train_split,
            "eval_split": eval_split, "text_columns": columns, "label_column": label_column, "metric": metric,
            "positive_label": positive_label, "drop_invalid": drop_invalid}


def parse_layers(text: Optional[str]) -> Optional[list[int] | str]:
    if text is None or text.strip().lower() in ("", "default"):
        return None
    if text.strip().lower() == "proportional":
        return "proportional"
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise SweetError(f"--exit-layers must be comma-separated integers such as 1,2,4,6, got {text!r}") from None


def split_flag(flag: str, text: Optional[str], convert) -> Optional[list]:
    if text is None:
        return None
    out = []
    for item in text.replace(" ", "").split(","):
        if item == "":
            continue
        try:
            out.append(convert(item))
        except ValueError:
            raise SweetError(f"{flag}: '{item}' is not a valid value (expected a comma-separated list, got '{text}')") from None
    return out


def command_line() -> str:
    return "sweet " + shlex.join(sys.argv[1:])


def optional_str(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
