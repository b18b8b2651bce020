"""Rerun a frozen stage of the study (``mlb study rerun STAGE``).

Nine stages of ``dvc.yaml`` are ``frozen: true`` with committed outputs, so that ``dvc repro``
on a fresh clone neither retrains the embedded vision side (``train_embedded``, about 45
minutes with its held-out check), nor remeasures its held-out curve by length
(``heldout_curve``, about 35 minutes), its sight on clips drawn another way
(``heldout_redrawn``, about 25 minutes), on two objects at once (``heldout_binding``, about
5 minutes) or on an object in one frame of ten (``heldout_sparse``, about 11 minutes), nor
reruns the cost sweep (``eval_cost``), probe v2's no-distractor control (``probe_control``,
about 10 minutes), its replication (``probe_replication``, about 20
minutes) or the same clips at every frame (``probe_sweep``, about 25 minutes). DVC cannot
unfreeze a stage whose command uses ``${...}`` parameters (``dvc unfreeze`` fails with
"cannot dump a parametrized stage"), and ``dvc repro`` skips frozen stages even when named.
:func:`rerun_frozen` does what ``dvc repro`` would: it resolves the stage's command with
DVC's own parser, removes the stage's outputs, runs the command in the repository, and records
the new outputs in ``dvc.lock`` with ``dvc commit -f STAGE``. The stage stays frozen. With
``resume`` the outputs are kept, so that a stage whose evaluation is resumable (``mlb eval``
skips the answers already in its run folder) goes on where an interrupted run stopped; the
command still regenerates every output it writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlb_core.errors import MLBError

COMMAND = "mlb study rerun"


def frozen_stage(root: str | Path, name: str) -> tuple[str, list[Path]]:
    """(resolved command, output paths) of the frozen stage ``name`` of ``root/dvc.yaml``."""
    from dvc.repo import Repo

    root = Path(root)
    with Repo(str(root)) as repo:
        try:
            stages = repo.stage.collect(f"{root / 'dvc.yaml'}:{name}")  # targets are relative to the cwd
        except Exception as exc:  # dvc raises its own StageNotFound / parse errors
            raise MLBError(f"no stage {name!r} in {root / 'dvc.yaml'} ({type(exc).__name__}: {exc})") from None
        (stage,) = stages
        if not stage.frozen:
            raise MLBError(f"stage {name!r} is not frozen: run `dvc repro {name}`")
        return stage.cmd, [root / str(out) for out in stage.outs]


def rerun_frozen(name: str, root: str | Path, dry: bool = False, resume: bool = False) -> int:
    """Rerun the frozen stage ``name`` (module docstring); ``dry``: only print the plan;
    ``resume``: keep the outputs, so that a resumable evaluation goes on where it stopped."""
    root = Path(root)
    cmd, outs = frozen_stage(root, name)
    commit = ["dvc", "commit", "-f", name]
    if resume:
        outs = []
    else:
        print("$ rm -rf " + " ".join(str(o.relative_to(root)) for o in outs), file=sys.stderr)
    print("$ " + cmd, file=sys.stderr)
    print("$ " + " ".join(commit), file=sys.stderr)
    commit = [sys.executable, "-m", "dvc", *commit[1:]]  # the dvc of this environment
    if dry:
        return 0
    for out in outs:
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
    # the command's `mlb` and `dvc` are this environment's, even when it is not activated
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if (rc := subprocess.call(cmd, shell=True, cwd=root, env=env)) != 0:
        print(f"error: stage {name} failed (exit {rc}); dvc.lock is unchanged, `git restore` brings back "
              "the committed outputs", file=sys.stderr)
        return rc
    return subprocess.call(commit, cwd=root)
