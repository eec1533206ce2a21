"""Per-segment ONNX export (sweet.export) and the ONNX Runtime engine (sweet.runtime) on tiny BERT, MPNet and
DeBERTa-v2 models: graphs equal torch, decisions equal the torch engine's, tokenisation equals the Hugging Face
tokenizer's, and the exported folder predicts alone, in a process that cannot import torch."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sweet.data import Examples  # noqa: E402
from sweet.encoding import encode  # noqa: E402
from sweet.errors import SweetError  # noqa: E402
from sweet.export import cached_export, export_run  # noqa: E402
from sweet.inference import EarlyExitEngine  # noqa: E402
from sweet.loader import load  # noqa: E402
from sweet.policies import make_policy  # noqa: E402
from sweet.rundir import load_tokenizer  # noqa: E402
from sweet.runtime import Manifest, OnnxPredictor, RuntimeTokenizer  # noqa: E402

from .conftest import VOCAB, tiny_model  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
MODELS = [("bert", "early_exit"), ("mpnet", "sweet"), ("deberta", "early_exit"), ("bert", "multi_model")]
IDS = [f"{k}-{m}" for k, m in MODELS]


def _texts(n: int, seed: int = 0, longest: int = 30) -> list[tuple[str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choice(VOCAB[5:]) for _ in range(rng.randint(1, longest))),) for _ in range(n)]


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = folder / "vocab-src.txt"
    vocab.write_text("\n".join(VOCAB + [f"w{i}" for i in range(64 - len(VOCAB))]) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def _save(kind: str, method: str, folder: Path, learned: bool = False) -> Path:
    """A tiny model with heads re-drawn at a larger scale (so that confidences vary between rows and rows leave at
    different exits), saved with a fast tokenizer as a sweet model directory."""
    model = tiny_model(kind, method, num_labels=2, pooling="mean")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for head in model.heads:
            head.dense.weight.copy_(torch.randn(head.dense.weight.shape, generator=g) * 4)
            head.classifier.weight.copy_(torch.randn(head.classifier.weight.shape, generator=g))
        if learned:
            for p in model.add_exit_predictors():
                p.weight.copy_(torch.randn(p.weight.shape, generator=g))
    model.config.task, model.config.label_names = "sst2", ["negative", "positive"]
    model.config.temperatures = [1.0, 1.5, 2.0, 1.2]
    folder.mkdir(parents=True)
    model.save_pretrained(folder / "model", _tokenizer(folder))
    return folder / "model"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model dir, exported folder with fp32 and int8 graphs)."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for (kind, method), name in zip(MODELS, IDS):
        mdir = _save(kind, method, root / name, learned=name == "bert-early_exit")
        out[name] = (mdir, Path(export_run(mdir, root / f"{name}-onnx", int8=True)["output"]))
    return out


@pytest.mark.parametrize("name", IDS)
def test_segment_graphs_equal_torch(exported, name):
    """Chained through ONNX Runtime (each graph fed the previous graph's hidden state), every exit's logits equal
    the torch model's forward, on a padded batch of another shape than the export's."""
    import onnxruntime as ort

    mdir, folder = exported[name]
    predictor = load(mdir, precision="fp32", device="cpu")
    manifest = Manifest.read(folder)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, 30, (7, 19), generator=g)
    mask = torch.ones_like(ids)
    for r, k in enumerate([19, 3, 10, 19, 7, 1, 15]):
        mask[r, k:] = 0
    ids = ids * mask
    tt = torch.zeros_like(ids)
    with torch.no_grad():
        want = [lg.numpy() for lg in predictor.model(ids, mask, tt).logits]
    hidden = None
    for i, rel in enumerate(manifest.precisions["fp32"]):
        sess = ort.InferenceSession(str(folder / rel), providers=["CPUExecutionProvider"])
        names = [x.name for x in sess.get_inputs()]
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": tt.numpy(),
                "hidden": hidden}
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {n: feed[n] for n in names})))
        np.testing.assert_allclose(outs["logits"], want[i], rtol=1e-4, atol=1e-4)
        hidden = outs.get("hidden_out")
    assert manifest.segmented == (name != "bert-multi_model")


@pytest.mark.parametrize("name", IDS)
@pytest.mark.parametrize("policy", ["confidence", "entropy", "patience"])
def test_engine_decisions_equal_the_torch_engine(exported, name, policy):
    mdir, folder = exported[name]
    torch_predictor = load(mdir, precision="fp32", device="cpu")
    onnx_predictor = load(folder, runtime="onnxruntime", threads=1)
    encoded = encode(torch_predictor.tokenizer, Examples(_texts(200), None, name="t"), 64, warn=False)
    exits_seen = set()
    thresholds = {"confidence": (0.55, 0.7, 0.9, 0.99), "entropy": (0.02, 0.1, 0.3, 0.8), "patience": (0, 0.34, 0.67, 1)}
    for t in thresholds[policy]:
        engine = EarlyExitEngine(torch_predictor.model, make_policy(policy, torch_predictor.model), t)
        want = engine.predict(encoded, torch_predictor.collator, batch_size=16)
        got = onnx_predictor.run(encoded, t, policy, batch_size=16)
        np.testing.assert_array_equal(got.exit_index, want.exit_index)
        np.testing.assert_array_equal(got.label, want.label)
        np.testing.assert_allclose(got.score, want.score, atol=1e-5)
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
        exits_seen |= set(want.exit_index.tolist())
    assert len(exits_seen) > 1  # the thresholds send rows out at different exits: the test can fail


def test_learned_policy_and_arrival_order_agree(exported):
    mdir, folder = exported["bert-early_exit"]
    torch_predictor = load(mdir, precision="fp32", device="cpu", policy="learned")
    onnx_predictor = load(folder, runtime="onnxruntime", policy="learned", threads=1)
    texts = [t[0] for t in _texts(120, seed=4)]
    for t in (0.3, 0.6, 0.9):
        want = torch_predictor.predict(texts, threshold=t, batch_size=8)
        got = onnx_predictor.predict(texts, threshold=t, batch_size=8)
        assert [(r["exit_layer"], r["label"]) for r in got] == [(r["exit_layer"], r["label"]) for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)
    rows = onnx_predictor.encode(Examples(_texts(50, seed=6), None, name="t"))
    assert (onnx_predictor.run(rows, 0.6, sort_by_length=False).label
            == onnx_predictor.run(rows, 0.6, sort_by_length=True).label).all()


def test_int8_graphs_run_and_mostly_agree(exported):
    mdir, folder = exported["bert-early_exit"]
    fp32 = load(folder, runtime="onnxruntime", threads=1)
    int8 = load(folder, runtime="onnxruntime", precision="int8", threads=1)
    assert int8.graphs.precision == "int8" and fp32.graphs.precision == "fp32"
    assert Manifest.read(folder).int8["per_channel"] is True
    texts = [t[0] for t in _texts(100, seed=2)]
    a, b = fp32.predict(texts, threshold=1.0), int8.predict(texts, threshold=1.0)
    assert np.mean([x["label"] == y["label"] for x, y in zip(a, b)]) >= 0.9


@pytest.mark.parametrize("backbone", ["tiny", "default"])
def test_runtime_tokenizer_gives_the_hugging_face_ids(tmp_path, backbone):
    """Singles and pairs, with truncation (longest_first) at a small max length, and token type ids."""
    from sweet.backbones import resolve_backbone

    if backbone == "tiny":
        tok = _tokenizer(tmp_path)
    else:
        tok = load_tokenizer(resolve_backbone("default"))
    tok.save_pretrained(str(tmp_path / "tok"))
    rng = random.Random(1)
    words = ["the", "movie", "was", "unbelievably", "good", "bad", "plot", "café", "naïve", "!", "x"]
    single = [(" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))),) for _ in range(60)]
    pairs = [(a[0], b[0]) for a, b in zip(single, reversed(single))]
    for texts in (single, pairs):
        for max_length in (12, 64):
            want = encode(tok, Examples(texts, None, name="t"), max_length, warn=False)
            got = RuntimeTokenizer(tmp_path / "tok" / "tokenizer.json", max_length, True).encode(texts)
            assert got.input_ids == want.input_ids
            # both count the rows longer than max_length (the tokenizers overflow flag undercounted pairs)
            assert got.n_truncated == want.n_truncated == sum(len(x) > max_length for x in tok(
                [t[0] for t in texts], [t[1] for t in texts] if len(texts[0]) == 2 else None)["input_ids"])
            if want.token_type_ids is not None:
                assert got.token_type_ids == want.token_type_ids


def _blocker(folder: Path, names: tuple[str, ...]) -> Path:
    """A sitecustomize that makes ``import NAME`` fail for each of ``names`` (as where they are not installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {names!r}:
                    raise ImportError(f"No module named {{name!r}} (blocked by the test)")
                return None
        sys.meta_path.insert(0, _Block())
    """), encoding="utf-8")
    return folder


def _python(code: str, blocked: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{SRC}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def test_a_copied_folder_predicts_in_a_process_without_torch(exported, tmp_path):
    """The folder copied alone elsewhere (the model directory gone from reach) predicts through sweet.load, in a
    process where importing torch or transformers fails; answers equal the torch predictor's."""
    mdir, folder = exported["deberta-early_exit"]
    copy = tmp_path / "elsewhere" / "model-onnx"
    shutil.copytree(folder, copy)
    texts = [t[0] for t in _texts(40, seed=9)]
    want = load(mdir, precision="fp32", device="cpu").predict(texts, threshold=0.7)
    code = textwrap.dedent(f"""
        import json, sys
        import sweet
        clf = sweet.load({str(copy)!r}, runtime="onnxruntime", threshold=0.7)
        print(json.dumps(clf.predict({texts!r})))
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        try:
            import torch
        except ImportError:
            print("torch blocked")
    """)
    r = _python(code, _blocker(tmp_path / "block", ("torch", "transformers")), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "torch blocked"
    got = json.loads(lines[0])
    assert [(g["label"], g["exit_layer"]) for g in got] == [(w["label"], w["exit_layer"]) for w in want]
    assert [g["confidence"] for g in got] == pytest.approx([w["confidence"] for w in want], abs=1e-5)


def test_onnxruntime_missing_is_one_line_naming_the_extra(exported, tmp_path):
    _, folder = exported["bert-early_exit"]
    code = f"import sweet\nsweet.load({str(folder)!r}, runtime='onnxruntime')"
    r = _python(code, _blocker(tmp_path / "block", ("onnxruntime",)), tmp_path)
    assert r.returncode != 0
    assert ("sweet.errors.SweetError: the ONNX runtime needs onnxruntime, which is not installed: "
            "pip install \"sweet[onnx]\"") in r.stderr


def test_a_run_directory_is_exported_once_into_its_cache(exported, tmp_path):
    mdir, _ = exported["mpnet-sweet"]
    run = tmp_path / "run"
    shutil.copytree(mdir, run / "model")
    first = load(run, runtime="onnxruntime", threads=1)
    stamp = (run / "onnx" / "manifest.json").stat().st_mtime_ns
    assert first.folder == run / "onnx" and "int8" not in first.manifest.precisions
    load(run, runtime="onnxruntime", threads=1)
    assert (run / "onnx" / "manifest.json").stat().st_mtime_ns == stamp  # reused
    int8 = load(run, runtime="onnxruntime", precision="int8", threads=1)  # int8 asked: exported again with it
    assert "int8" in int8.manifest.precisions
    assert cached_export(run, int8=True) == run / "onnx"


def test_bad_inputs_are_one_line_errors(exported, tmp_path):
    mdir, folder = exported["bert-early_exit"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run_config.json").write_text("{}", encoding="utf-8")
    cases = [
        (lambda: export_run(unfinished, tmp_path / "x"), "is an unfinished run (it has no model/ yet)"),
        (lambda: export_run(mdir, folder), "already exists; pass --overwrite to replace it"),
        (lambda: export_run(mdir, tmp_path / "y", fmt="tflite"), "unknown export format 'tflite'; choose one of: onnx"),
        (lambda: load(folder), "is an exported ONNX folder; load it with runtime='onnxruntime'"),
        (lambda: load(mdir, runtime="tensorrt"), "unknown runtime 'tensorrt'; choose one of: torch, onnxruntime"),
        (lambda: load(folder, runtime="onnxruntime", precision="bf16"), "the ONNX runtime runs fp32 or int8, not 'bf16'"),
        (lambda: load(folder, runtime="onnxruntime", device="cuda"), "the ONNX runtime runs on the CPU"),
        (lambda: load(tmp_path, runtime="onnxruntime"), "is not a sweet run directory"),
        (lambda: OnnxPredictor(tmp_path), "is not an exported sweet model folder (manifest.json is missing)"),
        (lambda: load(folder, runtime="onnxruntime", policy="nope"), "unknown exit policy 'nope'"),
        (lambda: load(folder, runtime="onnxruntime", task="qnli"), "the model was trained on sst2, not qnli"),
        (lambda: load(folder, runtime="onnxruntime").predict([""]), "item 0: empty text"),
    ]
    for call, message in cases:
        with pytest.raises(SweetError, match=None) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)
    fp32_only = tmp_path / "fp32-only"
    export_run(mdir, fp32_only)
    with pytest.raises(SweetError, match="holds no int8 graphs"):
        load(fp32_only, runtime="onnxruntime", precision="int8")


def test_cli_export_and_predict_with_the_onnx_runtime(exported, tmp_path, monkeypatch):
    from .test_cli_help import run

    mdir, _ = exported["bert-multi_model"]
    out = tmp_path / "exported"
    code, stdout, err = run(["export", str(mdir), "--output", str(out)])
    assert code == 0, err
    assert "Written: " + str(out) in stdout
    code, _, err = run(["export", str(mdir), "--output", str(out)])
    assert code == 2 and "already exists; pass --overwrite" in err
    code, _, err = run(["export", str(mdir), "--output", str(out), "--overwrite"])
    assert code == 0, err
    inputs = tmp_path / "in.txt"
    inputs.write_text("good movie\nthe plot was dull\n", encoding="utf-8")
    answers = {}
    for runtime, target in (("torch", mdir), ("onnxruntime", out)):
        code, stdout, err = run(["predict", str(target), "--runtime", runtime, "--input", str(inputs), "--format",
                                 "jsonl", "--threshold", "0.8", "--precision", "fp32"])
        assert code == 0, err
        answers[runtime] = [json.loads(line) for line in stdout.splitlines()]
    assert [(a["label"], a["exit_layer"]) for a in answers["onnxruntime"]] == \
        [(a["label"], a["exit_layer"]) for a in answers["torch"]]
    code, _, err = run(["predict", str(out), "--runtime", "onnx", "--input", str(inputs)])
    assert code == 2 and "unknown runtime 'onnx'; choose one of: torch, onnxruntime" in err


def test_the_numpy_policies_are_the_torch_policies():
    from sweet.policies import POLICIES
    from sweet.runtime.policies import POLICIES as NUMPY_POLICIES

    assert NUMPY_POLICIES == POLICIES


def test_serving_runs_the_onnx_predictor(exported):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sweet.serving.app import create_app

    _, folder = exported["mpnet-sweet"]
    texts = [t[0] for t in _texts(6, seed=11)]
    want = load(folder, runtime="onnxruntime", threads=1).predict(texts, threshold=0.7)
    with TestClient(create_app(folder, runtime="onnxruntime", threads=1, threshold=0.7)) as client:
        answer = client.post("/predict", json={"texts": texts})
        info = client.get("/info").json()
    assert answer.status_code == 200
    assert [(a["label"], a["exit_layer"]) for a in answer.json()["predictions"]] == \
        [(w["label"], w["exit_layer"]) for w in want]
    assert info["runtime"] == "onnxruntime" and info["precision"] == "fp32"


# ------------------------------------------------------------------------- the CLI in an image without torch
NO_TORCH = ("torch", "transformers", "sklearn")


def _cli(args: list[str], blocked: Path, cwd: Path, **kwargs):
    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{SRC}", "HF_HUB_OFFLINE": "1"}
    return [sys.executable, "-c", "import sys; from sweet.cli import main; sys.argv[0] = 'sweet'; main()", *args], env


def test_cli_predict_runs_without_torch(exported, tmp_path):
    """`sweet predict FOLDER --runtime onnxruntime` where torch, transformers and scikit-learn cannot be imported
    (a service image that leaves them out): the same answers as the torch predictor."""
    mdir, folder = exported["bert-early_exit"]
    texts = [t[0] for t in _texts(12, seed=4)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    want = load(mdir, precision="fp32", device="cpu").predict(texts, threshold=0.8)
    cmd, env = _cli(["predict", str(folder), "--runtime", "onnxruntime", "--threshold", "0.8", "--input",
                     str(tmp_path / "in.txt"), "--format", "jsonl", "--no-progress"],
                    _blocker(tmp_path / "block", NO_TORCH), tmp_path)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [(g["label"], g["exit_layer"]) for g in got] == [(w["label"], w["exit_layer"]) for w in want]


def test_cli_serve_runs_without_torch(exported, tmp_path):
    """`sweet serve FOLDER --runtime onnxruntime` in a process that cannot import torch, transformers or
    scikit-learn: it starts on loopback, answers /predict as the torch predictor does, and stops on SIGTERM."""
    import signal
    import socket
    import time
    import urllib.request

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    mdir, folder = exported["mpnet-sweet"]
    texts = [t[0] for t in _texts(6, seed=5)]
    want = load(mdir, precision="fp32", device="cpu").predict(texts, threshold=0.8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd, env = _cli(["serve", str(folder), "--runtime", "onnxruntime", "--threshold", "0.8", "--host", "127.0.0.1",
                     "--port", str(port), "--threads", "1"], _blocker(tmp_path / "block", NO_TORCH), tmp_path)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:  # bounded: 90 s to start
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start in 90 s"
                time.sleep(0.3)
        body = json.dumps({"texts": texts}).encode()
        request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            got = json.loads(response.read())["predictions"]
        assert [(g["label"], g["exit_layer"]) for g in got] == [(w["label"], w["exit_layer"]) for w in want]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err  # SIGTERM: the requests in flight finish, then exit 0
