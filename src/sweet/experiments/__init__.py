"""Experiment grids and their reports: the paper's protocol (tasks x methods x seeds x learning rates) as one
resumable command (``sweet grid``), and the tables and figures over its runs (``sweet report``).

One module per concept:

- :mod:`~sweet.experiments.spec`: what a grid runs (:class:`GridSpec`), validation, TOML/YAML/JSON;
- :mod:`~sweet.experiments.presets`: the grids a user can name (``paper``, ``quick``, ``sizes``);
- :mod:`~sweet.experiments.reference`: another grid whose choices a grid takes (``learning_rates_from``);
- :mod:`~sweet.experiments.plan`: the runs of a grid, their keys and directories, data fingerprints, time
  estimates, which runs are finished; with ``lr_selection = "first_seed"``, the runs that wait for the rate chosen
  on the first seed;
- :mod:`~sweet.experiments.store`: the grid directory on disk (manifest, stored spec, launch records), what of it
  is committed (its .gitignore) and the runs' split digests;
- :mod:`~sweet.experiments.continuation`: continuing a grid from its committed results on any machine: finished
  runs are reused, a change of data, options or sampling since they ran is refused, naming what changed;
- :mod:`~sweet.experiments.backends`: executing a grid (:func:`run_grid`) on the local or the Ray back-end;
- :mod:`~sweet.experiments.stopping`: stopping a launch: signals, and a stop request that loses no training step;
- :mod:`~sweet.experiments.selection`: learning rate, gradient scale and a method's parameter chosen on the
  calibration split;
- :mod:`~sweet.experiments.aggregate`: t-intervals over seeds (and over tasks), averaged curves, comparisons,
  size sweeps;
- :mod:`~sweet.experiments.claims`: the paper's claims checked on a grid (paired gaps between methods, verdicts);
- :mod:`~sweet.experiments.floors`: floor cells (one class predicted, at the majority rate) and the tasks free of them;
- :mod:`~sweet.experiments.cells`: the report's cells (mean ± CI (SD), floor markers) and shared tables;
- :mod:`~sweet.experiments.tables`: the report's Markdown page;
- :mod:`~sweet.experiments.claims_tables`: its floors and claims sections;
- :mod:`~sweet.experiments.moved`: a grid whose learning rates were extended: every claim judged with the rates
  chosen from the earlier set and from the full set, and what moved and why (each task's contribution);
- :mod:`~sweet.experiments.plots`: the report's figures, one distinct colour per method, and one run's curve;
- :mod:`~sweet.experiments.gridload`: a grid's finished runs at their chosen learning rates, and the sibling
  grids of the paper report's extra sections;
- :mod:`~sweet.experiments.ablation`, :mod:`~sweet.experiments.base_depth`, :mod:`~sweet.experiments.beyond`: those
  sections (the ladder ablation, the paper's depth, the methods beyond the paper against the research target);
- :mod:`~sweet.experiments.report`: collecting a grid's runs and writing the report (:func:`write_report`).
"""

from .aggregate import (
                   VERSUS,
                   aggregate_curves,
                   curve_on_grid,
                   is_size_sweep,
                   t_interval,
                   versus_point,
)
from .backends import BACKENDS, GridResult, execute_run, run_grid
from .claims import CLAIMS, Claim, check_claims, paired_gaps
from .continuation import check_continuation, describe_changes
from .plan import (
                   GridRun,
                   TaskInfo,
                   WaitingRun,
                   expand,
                   expand_stages,
                   inspect_tasks,
                   resolve_grid_data_dir,
                   run_key,
                   run_rel_dir,
                   run_state,
                   sha256_file,
)
from .plots import (
                   METHOD_COLORS,
                   RUN_CURVE,
                   method_color,
                   method_colors,
                   plot_curves,
                   plot_gaps,
                   write_run_curve,
)
from .report import build_report, collect, write_figures, write_report
from .selection import SELECTION_CRITERION, select_alpha, select_learning_rates, select_method_parameters
from .presets import PRESETS, preset
from .spec import (
                   LR_SELECTIONS,
                   PARAM_SELECTIONS,
                   SPEC_FIELDS,
                   GridSpec,
                   check_field,
                   load_spec_file,
                   spec_from_dict,
                   spec_to_toml,
)
from .status import grid_status
from .stopping import request_stop
from .store import (
                   GITIGNORE,
                   GRID_FILE,
                   LAUNCHES_FILE,
                   RUNS_DIR,
                   SPEC_TOML,
                   SPLITS_DIGEST,
                   load_grid,
                   splits_digest,
                   stored_spec,
)
from .tables import REPORT_JSON, REPORT_MD, TASK_LABELS, cost_label, render_markdown

__all__ = [
    "BACKENDS", "CLAIMS", "Claim", "check_claims", "paired_gaps", "expand_stages", "WaitingRun", "LR_SELECTIONS",
    "PARAM_SELECTIONS",
    "GITIGNORE", "GRID_FILE", "LAUNCHES_FILE", "METHOD_COLORS", "PRESETS", "REPORT_JSON", "REPORT_MD",
    "RUNS_DIR", "RUN_CURVE", "SELECTION_CRITERION", "SPEC_FIELDS", "SPEC_TOML", "SPLITS_DIGEST", "TASK_LABELS",
    "VERSUS", "GridResult", "GridRun", "GridSpec", "TaskInfo", "aggregate_curves", "build_report",
    "check_continuation", "check_field", "collect", "cost_label", "curve_on_grid", "describe_changes",
    "execute_run", "expand", "grid_status", "inspect_tasks", "is_size_sweep", "load_grid", "load_spec_file",
    "method_color", "method_colors", "plot_curves", "plot_gaps", "preset", "render_markdown",
    "request_stop", "resolve_grid_data_dir", "run_grid", "run_key", "run_rel_dir", "run_state", "select_alpha",
    "select_learning_rates", "select_method_parameters", "sha256_file", "spec_from_dict", "spec_to_toml", "splits_digest", "stored_spec",
    "t_interval", "versus_point", "write_figures", "write_report", "write_run_curve",
]
