"""The own-data results page (docs/results/own-data/README.md) from the runs benchmarks/own_data_runs.sh made:
per-exit scores, fixed-cost scores and AUC, the per-class table at the last exit, and each run's curve.png; then
NOTES.md (the reading of the numbers, written by hand) if the folder has one.

    python benchmarks/own_data_report.py docs/results/own-data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweet.evaluation import Evaluation
from sweet.experiments import write_run_curve
from sweet.io import atomic_write_text, read_json
from sweet.metrics import metric_label

DATASETS = {
    "reviews": "SST-2 as a CSV folder (`train.csv` + `validation.csv`; columns `review_id, review, sentiment`; "
               "labels `negative`/`positive`): `--data reviews/ --label-column sentiment` (text column detected)",
    "nli": "the MNLI pool as one JSON Lines file (`claim`, `evidence`, `verdict`: entailment/neutral/contradiction; "
           "no evaluation split, so a fixed stratified part of the pool, a fifth of it and at most 2,000 rows, is held out): "
           "`--data nli.jsonl --text-columns claim,evidence --label-column verdict`",
}


def section(run_dir: Path) -> list[str]:
    m = read_json(run_dir / "metrics.json")
    cfg = read_json(run_dir / "run_config.json")
    ev = Evaluation.of_run(m)
    curve = write_run_curve(run_dir, m)
    metric = metric_label(ev.metric)
    lines = [f"### {run_dir.name}", "",
             f"{m['method']}, seed {m['seed']}, lr {m['learning_rate']:g}, {m['n_train']} training rows, "
             f"{cfg['epochs']} epochs; evaluated on {ev.curve.split} ({ev.n_examples} rows); "
             f"train {m['timing']['train_seconds']:.0f} s, total {m['timing']['total_seconds']:.0f} s on "
             f"{m['placement']['train']['device']} ({m['placement']['train']['precision']}).", "",
             "| exit layer | " + " | ".join(str(p.exit_layer) for p in ev.per_exit) + " | AUC |",
             "|---" * (len(ev.per_exit) + 2) + "|",
             f"| {metric} | " + " | ".join(f"{p.score:.2f}" for p in ev.per_exit) + f" | {ev.curve.auc:.2f} |", "",
             "| cost | " + " | ".join(f"{c.cost_ratio:.3g}" for c in ev.curve.interpolated) + " |",
             "|---" * (len(ev.curve.interpolated) + 1) + "|",
             f"| {metric} | " + " | ".join("" if c.score is None else f"{c.score:.2f}" for c in ev.curve.interpolated) + " |", "",
             "Per class at the last exit:", "",
             "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c in m["classes"]["last_exit"]["per_class"]:
        lines.append(f"| {c['label']} | {c['precision']:.1f} | {c['recall']:.1f} | {c['f1']:.1f} | {c['support']} |")
    names = [c["label"] for c in m["classes"]["last_exit"]["per_class"]]
    lines += ["", "Confusion matrix at the last exit (rows: true, columns: predicted):", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, m["classes"]["last_exit"]["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(x) for x in row) + " |")
    lines += ["", f"![curve]({curve.relative_to(run_dir.parent.parent)})", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    runs = sorted(p for p in (args.folder / "runs").iterdir() if (p / "metrics.json").is_file())
    out = ["# Your own data: Early-Exit and SWEET on two datasets not in GLUE's layout", "",
           "Made by `benchmarks/own_data_runs.sh` (datasets: `examples/make_own_data.py` from `../shared/glue`; "
           "default backbone all-MiniLM-L6-v2, exits 1/2/4/6, 6,000 training rows, 2 epochs, lr 1e-4, seed 0, "
           "fp32, one run at a time beside other jobs), then `python benchmarks/own_data_report.py "
           "docs/results/own-data`. The runs' configs and metrics are in `runs/` (weights are not committed).", ""]
    for key, text in DATASETS.items():
        out += [f"## {key}", "", text, ""]
        for run_dir in runs:
            if run_dir.name.startswith(key + "-"):
                out += section(run_dir)
    prep = [p for p in sorted(args.folder.glob("prepare-*.json"))]
    if prep:
        out += ["## Preparing a 1,000,000-row CSV up to the first training step", "",
                "`python benchmarks/own_data_prepare.py --rows 1000000 --n-train N` (one ~60-character text and one of "
                "12 string labels per row; read and check, draw the splits, load the tokenizer, tokenize the rows used):",
                "", "| --n-train | rows trained | read + check (s) | splits (s) | tokenize used rows (s) | total (s) | peak RSS (MiB) | CPU |",
                "|---|---|---|---|---|---|---|---|"]
        for p in prep:
            r = read_json(p)
            s = r["seconds"]
            out.append(f"| {r['command'].split('--n-train ')[1]} | {r['n_train']:,} | {s['read_and_check']} | {s['splits']} | "
                       f"{s['tokenize_used_rows']} | {s['total_to_first_step']} | {r['peak_rss_mib']:,.0f} | "
                       f"{r['machine']['cpu']}, {r['machine']['cpus']} cores |")
        out.append("")
    notes = args.folder / "NOTES.md"  # the reading of the numbers, written by hand
    if notes.is_file():
        out += [notes.read_text(encoding="utf-8").rstrip(), ""]
    atomic_write_text(args.folder / "README.md", "\n".join(out))
    print(f"wrote {args.folder / 'README.md'}")


if __name__ == "__main__":
    main()
