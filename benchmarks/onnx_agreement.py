"""Decision agreement of the ONNX Runtime engine with the torch fp32 engine, and per-exit accuracy of the int8
graphs, on a trained run's evaluation split (issue #24, parts 1-2).

    PYTHONPATH=src python benchmarks/onnx_agreement.py RUN_DIR --data-dir ../shared/glue --out FILE.json

For each threshold of the confidence grid: the share of rows whose exit and label equal the torch fp32 engine's
(texts in, through each runtime's own tokenizer), for ONNX fp32 and int8. Per exit: accuracy of every exit's
logits on all rows (torch fp32, ONNX fp32, ONNX int8 per channel, per tensor, and per channel with the exit heads
kept in fp32). Also the exported folder's size.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sweet.evaluation import collect_logits
from sweet.export import export_run
from sweet.io import atomic_write_json
from sweet.loader import load
from sweet.metrics import score
from sweet.peers import quantize_onnx_int8
from sweet.rundir import environment, load_run_config
from sweet.runs import evaluation_split
from sweet.runtime import Manifest
from sweet.runtime.engine import session_options


def exit_logits(folder: Path, graphs: list[str], encoded, batch_size: int = 64) -> list[np.ndarray]:
    """Every exit's logits on every row, chaining the segment graphs (each batch padded to its longest row)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(folder / g), sess_options=session_options(2),
                                     providers=["CPUExecutionProvider"]) for g in graphs]
    names = [[i.name for i in s.get_inputs()] for s in sessions]
    n = len(encoded)
    out = [np.zeros((n, 0))] * len(sessions)
    chunks = [[] for _ in sessions]
    order = np.argsort(-encoded.lengths, kind="stable")
    for b in range(0, n, batch_size):
        rows = order[b : b + batch_size]
        width = int(encoded.lengths[rows].max())
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        tt = np.zeros_like(ids)
        for j, r in enumerate(rows):
            k = len(encoded.input_ids[r])
            ids[j, :k], mask[j, :k] = encoded.input_ids[r], 1
            if encoded.token_type_ids is not None:
                tt[j, :k] = encoded.token_type_ids[r]
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        for s, sess in enumerate(sessions):
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {k: feed[k] for k in names[s]})))
            chunks[s].append(outs["logits"])
            feed["hidden"] = outs.get("hidden_out")
    inverse = np.argsort(order)
    return [np.concatenate(c)[inverse] for c in chunks] if n else out


def agreement_from_logits(grid, logits, labels, policy) -> list[dict]:
    from sweet.policies import decide

    out = []
    for t in grid:
        ref_exit, ref_pred, _ = decide(policy, logits["torch fp32"], t)
        row = {"threshold": t, "torch_fp32_accuracy": score("accuracy", labels, ref_pred), "from_logits": True}
        for p, key in (("fp32", "onnx fp32"), ("int8", "onnx int8 per-channel (shipped)")):
            ex, pred, _ = decide(policy, logits[key], t)
            row[f"onnx_{p}_agreement"] = float(np.mean((ex == ref_exit) & (pred == ref_pred)))
            row[f"onnx_{p}_accuracy"] = score("accuracy", labels, pred)
        out.append(row)
        print(row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-logits", action="store_true",
                    help="agreement from each runtime's per-exit logits on all rows (sweet.policies.decide, the "
                         "evaluation path the engine is tested equal to) instead of running the engines per threshold")
    ap.add_argument("--max-examples", type=int, default=None, help="only the first N rows of the evaluation split")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = Path(args.run_dir)
    cfg = load_run_config(run)
    examples, split = evaluation_split(cfg, args.data_dir)
    if args.max_examples is not None:
        examples = examples.subset(range(min(args.max_examples, len(examples))))
    labels = np.asarray(examples.labels)
    tmp = Path(tempfile.mkdtemp(prefix="sweet-onnx-agreement-"))
    try:
        exported = export_run(run, tmp / "export", int8=True)
        folder = Path(exported["output"])
        manifest = Manifest.read(folder)
        torch_p = load(run, precision="fp32", device="cpu")
        onnx_p = {p: load(folder, runtime="onnxruntime", precision=p, threads=args.threads) for p in ("fp32", "int8")}
        texts = [list(t) if len(t) > 1 else t[0] for t in examples.texts]
        grid = [float(t) for t in torch_p.get_policy("confidence").threshold_grid(manifest.num_labels)]
        # per-exit accuracy on every row
        encoded = torch_p.encode(examples)
        logits = {"torch fp32": [lg.numpy() if hasattr(lg, "numpy") else lg for lg in
                                 collect_logits(torch_p.model, encoded, torch_p.collator, 64, progress=False)],
                  "onnx fp32": exit_logits(folder, manifest.precisions["fp32"], encoded),
                  "onnx int8 per-channel (shipped)": exit_logits(folder, manifest.precisions["int8"], encoded)}
        per_exit = {k: [score("accuracy", labels, lg.argmax(-1)) for lg in v] for k, v in logits.items()}
        import onnx

        variants = {"onnx int8 per-tensor": dict(per_channel=False),
                    "onnx int8 per-channel, heads fp32": dict(per_channel=True, heads=True)}
        for name, v in variants.items():
            vdir = tmp / name.replace(" ", "_").replace(",", "")
            vdir.mkdir()
            graphs = []
            for rel in manifest.precisions["fp32"]:
                keep = []
                if v.get("heads"):
                    keep = [n.name for n in onnx.load(str(folder / rel)).graph.node if n.name.startswith("/head/")]
                dst = vdir / Path(rel).name
                quantize_onnx_int8(folder / rel, dst, per_channel=v["per_channel"], keep_fp32=keep)
                graphs.append(dst.name)
            per_exit[name] = [score("accuracy", labels, lg.argmax(-1)) for lg in exit_logits(vdir, graphs, encoded)]
        for k, v in per_exit.items():
            print(k, [round(x, 2) for x in v], flush=True)
        if args.from_logits:
            agreement = agreement_from_logits(grid, logits, labels, torch_p.get_policy("confidence"))
        else:
            agreement = []
            for t in grid:
                want = torch_p.predict(texts, threshold=t)
                row = {"threshold": t, "torch_fp32_accuracy": score("accuracy", labels, np.array([w["label_id"] for w in want]))}
                for p, pred in onnx_p.items():
                    got = pred.predict(texts, threshold=t)
                    row[f"onnx_{p}_agreement"] = float(np.mean([(g["exit_layer"], g["label_id"]) == (w["exit_layer"], w["label_id"])
                                                                for g, w in zip(got, want)]))
                    row[f"onnx_{p}_accuracy"] = score("accuracy", labels, np.array([g["label_id"] for g in got]))
                agreement.append(row)
                print(row, flush=True)
        sizes = {p: sum((folder / g).stat().st_size for g in files) for p, files in manifest.precisions.items()}
        report = {"run_dir": str(run), "task": cfg.task, "split": split, "n": len(labels),
                  "exit_layers": manifest.exit_layers, "agreement": agreement, "per_exit_accuracy": per_exit,
                  "folder_bytes": exported["bytes"], "graph_bytes": sizes, "export_seconds": exported["seconds"],
                  "threads": args.threads, "seconds": time.perf_counter() - t0, "environment": environment(),
                  "command": "PYTHONPATH=src python " + " ".join(sys.argv)}
        atomic_write_json(args.out, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
