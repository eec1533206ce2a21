"""The bench report as a table a person reads (``sweet bench`` prints it; ``bench.md``)."""

from __future__ import annotations

from ..precision import describe_cpu


def _fmt(value, spec: str, width: int) -> str:
    sign = "+" if spec.startswith("+") else ""
    return f"{'-':>{width}}" if value is None else f"{value:{sign}{width}{spec.lstrip('+')}}"


def format_bench(report: dict) -> str:
    """A Markdown table: one row per configuration and batch size."""
    ort = report.get("onnxruntime") or {}
    lines = [f"{report['task']} | {report['method']} | {report.get('policy', 'confidence')} policy | "
             f"{report['n_examples']} examples ({report.get('split', 'evaluation')}) | device {report.get('device')} | "
             f"threads {report['threads']} | median of {report['repeats']} | "
             f"onnxruntime {ort.get('version') or 'not installed'}"]
    if report.get("cpu"):  # bench files written before the CPU was recorded have none
        lines.append(f"cpu: {describe_cpu(report['cpu'])}")
    lines.append("")
    header = ["batch", "configuration", "cost", "ideal", "speedup", "ratio", "same-prec", "ex/s", "acc",
              "Δacc fp32", "vs ORT int8", "vs ORT int8 model-only"]
    agreement = any("agreement_vs_torch_fp32" in p for p in report["points"])
    if agreement:
        header.append("agree torch fp32")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if h not in ("configuration",) else "---" for h in header) + "|")
    for p in report["points"]:
        cells = [str(p["batch_size"]), p["name"] + (" (baseline)" if p["baseline"] else ""),
                 _fmt(p["cost_ratio"], ".3f", 5), _fmt(p["ideal_speedup"], ".2f", 5),
                 _fmt(p["measured_speedup"], ".2f", 5), _fmt(p["ratio"], ".2f", 5),
                 _fmt(p.get("ratio_same_precision"), ".2f", 5), _fmt(p["examples_per_second"], ".1f", 7),
                 _fmt(p["accuracy"], ".2f", 6), _fmt(p.get("accuracy_delta_vs_fp32"), "+.2f", 6),
                 _fmt(p.get("throughput_vs_onnxruntime_int8_tokenized"), ".2f", 5),
                 _fmt(p.get("throughput_vs_onnxruntime_int8"), ".2f", 5)]
        if agreement:
            cells.append(_fmt(p.get("agreement_vs_torch_fp32"), ".4f", 6))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("speedup: vs the torch fp32 full model, median of per-repeat ratios; ideal = 1/cost; ratio = "
                 "speedup x cost; same-prec = the same ratio against the full model at the row's own precision; "
                 "vs ORT int8: throughput relative to ONNX Runtime int8 on the full model, texts in: both sides "
                 "also tokenize the same texts (and pad, where the engine does not pad inside its own timing), "
                 "timed in the same repeats; vs ORT int8 model-only: both sides on pre-tokenised rows."
                 + (" onnx engine: the ONNX Runtime engine (same-prec against ONNX Runtime's full model at that "
                    "precision, int8 quantized with the engine's recipe: the 'int8 engine-recipe' row, per-channel "
                    "weights, where 'onnxruntime int8 full' keeps quantize_dynamic's per-tensor default; agree "
                    "torch fp32: share of rows with the torch fp32 engine's exit and label at the same threshold)."
                    if agreement else ""))
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
