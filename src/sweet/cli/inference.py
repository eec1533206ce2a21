"""``sweet evaluate``, ``sweet predict`` and ``sweet bench``: use a trained run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SweetError
from ..io import decode_utf8
from .base import app
from .options import (
    POSITIVE,
    PRECISION_CHOICE,
    RUNTIME_CHOICE,
    DataConfig,
    DataDir,
    DefaultThreshold,
    Device,
    EvaluateData,
    EvaluateSplit,
    Policy,
    Precision,
    Progress,
    Runtime,
    one_of,
    optional_str,
    split_flag,
)

EVALUATE_PRECISION_HELP = ("Inference precision (auto, fp32, bf16, fp16 or int8). Default: the precision the run's "
                           "own results were computed in (fp32 for runs trained by sweet), so that the numbers compare.")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'sweet train'.")],
    data_dir: DataDir = None,
    data: EvaluateData = None,
    data_config: DataConfig = None,
    eval_split: EvaluateSplit = None,
    file: Annotated[Optional[Path], typer.Option(help="Evaluate on this labelled file instead (the same as --data FILE).")] = None,
    output_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON instead of a table.")] = False,
    policy: Policy = "confidence",
    device: Device = "auto",
    precision: Annotated[Optional[str], typer.Option(
        **PRECISION_CHOICE,
        help=EVALUATE_PRECISION_HELP)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the run's own results in RUN_DIR/metrics.json (and its placement) with this evaluation. Without it the result goes to a file of its own, RUN_DIR/metrics-eval[-POLICY]-PRECISION.json (with --file X.tsv: metrics-X[-POLICY]-PRECISION.json).")] = False,
    progress: Progress = True,
) -> None:
    """Re-evaluate a trained run: per-exit scores, speed-accuracy curve, interpolated scores, AUC. The run's own
    metrics.json is left as it is unless --overwrite is given; the printed table names the precision and the file
    written."""
    # heavy (torch): imported when the command runs, so that `sweet --help` stays fast
    from ..evaluation import Evaluation, format_report
    from ..runs import evaluate_run

    if data is not None and file is not None:
        raise SweetError("give --data or --file (the same thing for a file), not both")
    result = evaluate_run(run_dir, optional_str(data_dir), data if data is not None else optional_str(file),
                          data_config=data_config, eval_split=eval_split, progress=progress, policy=policy,
                          device=device, precision=precision, overwrite=overwrite)
    placed = Evaluation.of_run(result).curve.placement
    if output_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(format_report(result))
        typer.echo(f"\nevaluated in {placed['precision']} on {placed['device']}. Written: {result['written']}")


def _read_input_lines(source: str) -> list[str]:
    if source == "-":
        raw, source_name = sys.stdin.buffer.read(), "standard input"
    else:
        path = Path(source)
        if not path.is_file():
            raise SweetError(f"input file not found: {path}")
        raw, source_name = path.read_bytes(), str(path)
    return decode_utf8(raw, source_name).splitlines()


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its model/ directory).")],
    input: Annotated[str, typer.Option("--input", "-i", help="Text file with one example per line (pairs: two texts separated by a tab); '-' reads stdin.")] = "-",
    threshold: DefaultThreshold = None,
    policy: Policy = "confidence",
    task: Annotated[Optional[str], typer.Option(help="Task (default: the one the model was trained on).")] = None,
    fmt: Annotated[str, typer.Option("--format", **one_of(("tsv", "jsonl"), lambda v: f"--format must be tsv or jsonl, got {v!r}"),
                                     help="tsv (label, exit layer, confidence; with a --policy other than confidence also its score) or jsonl.")] = "tsv",
    batch_size: Annotated[int, typer.Option(metavar=POSITIVE, help="Rows per batch at every depth (the engine refills batches as rows leave).")] = 64,
    device: Device = "auto",
    precision: Precision = "auto",
    runtime: Runtime = "torch",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Score a table instead: --input FILE (.csv, .tsv, .jsonl or .parquet, with the run's text columns by name) is read in batches and written to this file (format by its extension) with label, exit_layer and confidence added to every row (sweet_label, ... where the input has those names).")] = None,
    progress: Progress = True,
) -> None:
    """Predict labels for unlabelled text; one line out per example: label, exit layer, confidence. With --output,
    score a whole file (CSV, TSV, JSON Lines or Parquet), streaming in batches. RUN_DIR may also be a folder written
    by 'sweet export' (with --runtime onnxruntime)."""
    from ..loader import load  # heavy (torch): only when the command runs
    from ..scoring import score_file

    if output is not None and input == "-":
        raise SweetError("--output needs --input FILE (.csv, .tsv, .jsonl or .parquet); standard input is read as lines")
    lines = _read_input_lines(input) if output is None else None
    predictor = load(run_dir, runtime=runtime, device=device, precision=precision, task=task, threshold=threshold,
                     policy=policy, batch_size=batch_size)
    if output is not None:
        summary = score_file(predictor, input, output, threshold=threshold, policy=policy, progress=progress)
        counts = ", ".join(f"layer {k}: {v}" for k, v in summary["exit_counts"].items())
        typer.echo(f"scored {summary['rows']} rows in {summary['seconds']:.1f}s ({counts}). Written: {summary['output']}")
        return
    rows = predictor.predict_lines(lines)
    for r in rows:
        if fmt == "jsonl":
            typer.echo(json.dumps(r))
        else:
            score = f"\t{r['score']:.4f}" if "score" in r else ""
            typer.echo(f"{r['label']}\t{r['exit_layer']}\t{r['confidence']:.4f}{score}")


@app.command()
def bench(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'sweet train'.")],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes, e.g. 1,16,64.")] = "64",
    repeats: Annotated[int, typer.Option(metavar=POSITIVE, help="Timed passes over the split per configuration (the median is reported).")] = 3,
    max_examples: Annotated[Optional[int], typer.Option(metavar=POSITIVE, help="Use only the first N examples of the evaluation split.")] = None,
    threads: Annotated[Optional[int], typer.Option(metavar=POSITIVE, help="torch threads, and ONNX Runtime's intra-op threads (default: torch's default, usually the core count).")] = None,
    device: Device = "auto",
    precisions: Annotated[str, typer.Option(help="Comma list of inference precisions for the engine and the torch full model (fp32 is always included: it is the reference): fp32, bf16, fp16, int8; 'default' = fp32 plus what this device runs fast (CPU: int8, and bf16 where the processor has native bf16); 'all' = every one it can run.")] = "default",
    peers: Annotated[bool, typer.Option(help="Also time ONNX Runtime fp32 and int8 on the full model (needs the onnx extra: pip install 'sweet\\[onnx]', or pip install -e '.\\[onnx]' in a clone; skipped with a note without it).")] = True,
    data_dir: DataDir = None,
    data: EvaluateData = None,
    data_config: DataConfig = None,
    eval_split: EvaluateSplit = None,
    output: Annotated[Optional[Path], typer.Option(help="Where to write the JSON (default: RUN_DIR/bench.json).")] = None,
    policy: Policy = "confidence",
    runtime: Annotated[str, typer.Option(**RUNTIME_CHOICE,
                                         help="torch: the torch engine's rows; onnxruntime: also the ONNX Runtime engine's rows (the run exported per segment, fp32 and int8), next to the torch engine's, with their agreement with the torch fp32 engine.")] = "torch",
    progress: Progress = True,
) -> None:
    """Measure throughput and accuracy of early-exit inference over the threshold grid, at each precision, against
    the full model in torch (fp32 = the baseline, and each precision) and in ONNX Runtime (fp32, int8), on the same
    examples: cost ratio, ideal speedup (1/cost), realised speedup and their ratio."""
    from ..bench import (  # heavy (torch): only when the command runs
        benchmark,
        format_bench,
    )
    from ..io import atomic_write_json

    sizes = split_flag("--batch-sizes", batch_sizes, int) or [64]
    report = benchmark(run_dir, sizes, repeats=repeats, max_examples=max_examples, threads=threads,
                       data_dir=optional_str(data_dir), progress=progress, policy=policy, device=device,
                       precisions=precisions, peers=peers, data=data, data_config=data_config, eval_split=eval_split,
                       runtime=runtime)
    path = output or (run_dir / ("bench.json" if policy == "confidence" else f"bench-{policy}.json"))
    atomic_write_json(path, report)
    typer.echo(format_bench(report))
    typer.echo(f"\nwritten: {path}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'sweet train' (or its model/ directory).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write (it must not exist, unless --overwrite).")],
    fmt: Annotated[str, typer.Option("--format", **one_of(("onnx",), lambda v: f"unknown export format {v!r}; choose one of: onnx"),
                                     help="onnx: one ONNX graph per segment (Multi-Model: per member), dynamic batch and sequence axes, with manifest.json and the tokenizer files; run it with --runtime onnxruntime.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Also write int8 graphs (ONNX Runtime dynamic quantization, per output channel), used by --precision int8.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace --output if it exists (the old folder goes once the new one is complete).")] = False,
) -> None:
    """Export a trained run for ONNX Runtime: one graph per segment, so that the exported model still exits early.
    The folder is self-contained (manifest.json, graphs, tokenizer): 'sweet predict FOLDER --runtime onnxruntime'
    or sweet.load(FOLDER, runtime="onnxruntime") run it with onnxruntime, tokenizers and numpy only."""
    from ..export import export_run  # heavy (torch): only when the command runs

    info = export_run(run_dir, output, fmt=fmt, int8=int8, overwrite=overwrite)
    graphs = ", ".join(f"{p}: {len(files)} graphs" for p, files in info["precisions"].items())
    typer.echo(f"exported {info['method']} (exits {','.join(map(str, info['exit_layers']))}; {graphs}) in "
               f"{info['seconds']:.1f}s, {info['bytes'] / 1e6:.1f} MB. Written: {info['output']}")
