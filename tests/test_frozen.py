"""``mlb study rerun``: rerunning a frozen, parametrized DVC stage (mlb_core.study.frozen)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlb_core.errors import MLBError
from mlb_core.study.frozen import frozen_stage, rerun_frozen
from mlb_core.study.params import ROOT


def test_the_studys_frozen_stages_resolve_with_their_parameters():
    for name, out in (("eval_cost", "results/eval/cost"), ("train_embedded", "mlb_core/weights/embedded-vision")):
        cmd, outs = frozen_stage(ROOT, name)
        assert "${" not in cmd and cmd.strip()
        assert outs == [ROOT / out]
    cmd, _ = frozen_stage(ROOT, "train_embedded")  # the committed recipe, by name (params.yaml train.recipe)
    assert "mlb train-vision --out mlb_core/weights/embedded-vision --recipe pooled --seed 0 --minutes 30" in cmd
    cmd, outs = frozen_stage(ROOT, "heldout_curve")
    assert "mlb heldout --curve --scale 1.0" in cmd and "${" not in cmd
    assert outs == [ROOT / "results/heldout/length_curve.json", ROOT / "results/heldout/length_curve.png"]
    cmd, outs = frozen_stage(ROOT, "heldout_redrawn")
    assert "mlb heldout --redrawn --scale 1.0" in cmd and outs == [ROOT / "results/heldout/redrawn.json"]
    cmd, outs = frozen_stage(ROOT, "heldout_binding")
    assert "mlb heldout --binding --scale 1.0" in cmd and outs == [ROOT / "results/heldout/binding.json"]
    cmd, outs = frozen_stage(ROOT, "heldout_sparse")
    assert "mlb heldout --sparse --scale 1.0" in cmd and outs == [ROOT / "results/heldout/sparse.json"]
    cmd, outs = frozen_stage(ROOT, "probe_control")
    assert "mlb probe --out data/probe_control --no-distractors" in cmd and "--repeats 3" in cmd and "${" not in cmd
    assert ROOT / "data/probe_control" in outs and ROOT / "results/tables/probe_control.md" in outs
    cmd, outs = frozen_stage(ROOT, "probe_replication")  # fresh clips (seed 1), six a cell, fixed in advance
    assert "--no-distractors" in cmd and "--repeats 6 --seed 1" in cmd and "${" not in cmd
    assert ROOT / "results/probe/hypotheses_replication.json" in outs and ROOT / "data/probe_replication" in outs
    cmd, outs = frozen_stage(ROOT, "probe_sweep")  # the same clips at every frame, and each target alone
    assert "--no-distractors --sweep" in cmd and "--sweep --isolated" in cmd and "--repeats 6 --seed 2" in cmd
    assert "-p alone results/eval/probe_sweep_alone" in cmd and "${" not in cmd
    assert ROOT / "figures/probe_sweep_by_frame.png" in outs and ROOT / "results/eval/probe_sweep_alone" in outs
    cmd, outs = frozen_stage(ROOT, "probe_paper")  # 50 frames, both sizes and orders, with the distractors
    assert "mlb probe --out data/probe_paper --frames 50" in cmd and "--orders forward,reversed" in cmd
    assert "--no-distractors" not in cmd and "--preset mlb" in cmd and ",full" in cmd and "${" not in cmd
    assert ROOT / "results/eval/probe_paper" in outs and ROOT / "results/probe/hypotheses_paper.json" in outs
    with pytest.raises(MLBError, match="not frozen"):
        frozen_stage(ROOT, "fig1")
    with pytest.raises(MLBError, match="no stage 'nope'"):
        frozen_stage(ROOT, "nope")


def test_rerun_runs_a_frozen_stage_and_records_it_in_the_lock(tmp_path):
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("word: hello\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: mkdir -p out && echo ${word} > out/said.txt\n    frozen: true\n"
        "    outs:\n      - out:\n          cache: false\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("from before")
    assert rerun_frozen("make", tmp_path, dry=True) == 0 and (tmp_path / "out" / "stale.txt").exists()
    assert rerun_frozen("make", tmp_path) == 0
    assert (tmp_path / "out" / "said.txt").read_text() == "hello\n"
    assert not (tmp_path / "out" / "stale.txt").exists()  # outputs are removed first, as dvc repro does
    lock = (tmp_path / "dvc.lock").read_text()
    assert "make:" in lock and "out" in lock
    assert "frozen: true" in (tmp_path / "dvc.yaml").read_text()
    (tmp_path / "out" / "answered.txt").write_text("an answer of an interrupted run")
    assert rerun_frozen("make", tmp_path, resume=True) == 0  # resume: the outputs are kept, the command reruns
    assert (tmp_path / "out" / "answered.txt").exists() and (tmp_path / "out" / "said.txt").read_text() == "hello\n"
    lock = (tmp_path / "dvc.lock").read_text()
    (tmp_path / "dvc.yaml").write_text((tmp_path / "dvc.yaml").read_text().replace("echo", "false &&"))
    assert rerun_frozen("make", tmp_path) != 0  # a failing command: nonzero, the lock untouched
    assert (tmp_path / "dvc.lock").read_text() == lock

