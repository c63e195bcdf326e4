"""`mde eval RUN RUN ...`'s table (mde.trainer.run_table): cells by model and variant, the mean and spread over
seeds, and the refusals. The table of real JETATAG runs is tested in test_jetatag_training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")  # a run's variant comes from its family's recipe (the model registry)

from mde.errors import MdeError
from mde.trainer.run_table import RunResult, markdown, run_result, tabulate


def finished_run(root: Path, name: str, model: str, joint: bool, roc: float, pr: float) -> Path:
    """A run folder as a finished run leaves it, for the parts the table reads: config.json and metrics.json."""
    run = root / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": model, "joint_embedding": joint}))
    (run / "metrics.json").write_text(json.dumps({"test": {"roc_auc": roc, "pr_auc": pr, "loss": 0.3}}))
    return run


def test_runs_of_one_cell_give_their_mean_and_spread(tmp_path):
    runs = [finished_run(tmp_path, "a", "jetatag_sc", True, 0.90, 0.40),
            finished_run(tmp_path, "b", "jetatag_sc", True, 0.92, 0.44),
            finished_run(tmp_path, "c", "jetatag_sc", False, 0.88, 0.35),
            finished_run(tmp_path, "d", "jetatag_hc", True, 0.91, 0.42)]
    results = [run_result(run) for run in runs]
    assert [(r.model, r.variant) for r in results] == [("jetatag_sc", "withJE"), ("jetatag_sc", "withJE"),
                                                       ("jetatag_sc", "noJE"), ("jetatag_hc", "withJE")]
    table = tabulate(results)
    assert list(table) == ["jetatag_hc", "jetatag_sc"] and list(table["jetatag_sc"]) == ["noJE", "withJE"]
    cell = table["jetatag_sc"]["withJE"]
    assert cell.runs == 2 and cell.mean["roc_auc"] == pytest.approx(0.91)
    assert cell.std["pr_auc"] == pytest.approx(0.02 * 2 ** 0.5)  # the sample standard deviation of 0.40, 0.44
    assert markdown(table).splitlines() == [
        "| model | noJE ROC-AUC | noJE PR-AUC | withJE ROC-AUC | withJE PR-AUC |",
        "|---|---:|---:|---:|---:|",
        "| jetatag_hc | - | - | 0.9100 | 0.4200 |",
        "| jetatag_sc | 0.8800 | 0.3500 | 0.9100 ± 0.0141 (2 runs) | 0.4200 ± 0.0283 (2 runs) |",
    ]


def test_families_without_a_joint_stage_fill_one_column_pair(tmp_path):
    results = [run_result(finished_run(tmp_path, "f", "fcn05", False, 0.8, 0.3)),
               RunResult("g", "jetatag_ms", "noJE", 0.7, 0.2)]
    assert markdown(tabulate(results)).splitlines()[0] == "| model | noJE ROC-AUC | noJE PR-AUC | ROC-AUC | PR-AUC |"


def test_unfinished_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(MdeError, match="not a training run folder"):
        run_result(tmp_path)
    run = finished_run(tmp_path, "r", "fcn05", False, 0.8, 0.3)
    (run / "metrics.json").unlink()
    with pytest.raises(MdeError, match=r"no metrics.json \(the run has not finished"):
        run_result(run)
    (run / "metrics.json").write_text(json.dumps({"valid": {"roc_auc": 0.5}}))
    with pytest.raises(MdeError, match="holds no test ROC-AUC and PR-AUC"):
        run_result(run)


def test_eval_needs_a_dataset_for_one_target_and_run_folders_for_several(tmp_path):
    from test_cli import assert_one_line_error, run_mde

    run = finished_run(tmp_path, "r", "fcn05", False, 0.8, 0.3)
    assert_one_line_error(run_mde("eval", run, cwd=tmp_path, home=tmp_path), "needs --dataset and --data")
    assert_one_line_error(run_mde("eval", run, tmp_path / "elsewhere", cwd=tmp_path, home=tmp_path),
                          "elsewhere: not a training run folder")
    other = finished_run(tmp_path, "s", "fcn05", False, 0.9, 0.3)
    table = run_mde("eval", run, other, run, cwd=tmp_path, home=tmp_path)  # a run named twice counts once
    assert table.returncode == 0 and "0.8500 ± 0.0707 (2 runs)" in table.stdout, table.stderr
