"""benchmarks/paper_queue.sh: the follow-up grids, in order, each through paper_grid.sh with its own grid, report
and spec (checked with --dry-run and a stand-in for sweet that records what it is asked)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "paper_queue.sh"


def _queue(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "sweet"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\necho "grid plan for $3"\n', encoding="utf-8")
    fake.chmod(0o755)
    res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SWEET": str(fake)})
    return res, calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []


def test_dry_run_plans_the_four_grids_in_order_with_their_specs(tmp_path):
    res, calls = _queue(tmp_path, "--dry-run", "--until", "23:59", "--", "--data-dir", "../shared/glue")
    assert res.returncode == 0, res.stderr
    p = "docs/results/paper"
    assert calls == [
        f"grid --output {p}/grid --data-dir ../shared/glue --dry-run",
        f"grid --output {p}/ablation --spec {p}/ablation/spec.toml --data-dir ../shared/glue --dry-run",
        f"grid --output {p}/beyond --spec {p}/beyond/spec.toml --data-dir ../shared/glue --dry-run",
        f"grid --output {p}/base --spec {p}/base/spec.toml --data-dir ../shared/glue --dry-run",
    ]
    lines = [x for x in res.stdout.splitlines() if "paper_grid.sh" in x]
    # each grid beside the paper grid; the report written is the paper grid's (with a section per sibling)
    assert lines[1].endswith(f"ablation: benchmarks/paper_grid.sh --until 23:59 --grid {p}/ablation --report {p} "
                             f"--report-grid {p}/grid --log /tmp/paper-queue-ablation.log -- --spec "
                             f"{p}/ablation/spec.toml --data-dir ../shared/glue")
    for name in ("ablation", "beyond", "base"):  # every spec the queue names is committed
        assert (ROOT / p / name / "spec.toml").is_file()


def test_only_picks_grids_and_bad_options_are_refused(tmp_path):
    res, calls = _queue(tmp_path, "--dry-run", "--only", "beyond,base")
    assert res.returncode == 0 and [c.split()[2] for c in calls] == ["docs/results/paper/beyond",
                                                                      "docs/results/paper/base"]
    res, calls = _queue(tmp_path, "--until", "7:3x")
    assert res.returncode == 2 and "--until wants HH:MM, got '7:3x'" in res.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option '--nope'" in bad.stderr
