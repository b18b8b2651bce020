"""The reproducible study: params.yaml -> MLBParams, paper mode resolves and `dvc exp run --dry`
under it prints the plan, dvc.yaml names exact deps / params / notebook parameters, and the
glue behind the figure and table stages (attention maps, evaluation runs) on tiny models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import yaml

from mlb_core.backbones import vision_weights
from mlb_core.config import MLBParams, get_preset
from mlb_core.errors import MLBError
from mlb_core.study import analysis
from mlb_core.study import params as study

ROOT = Path(__file__).resolve().parents[1]
PAPER_7B = "llava-hf/llava-v1.6-vicuna-7b-hf"


def _lookup(params: dict, dotted: str) -> object:
    for part in dotted.split("."):
        params = params[part]
    return params


def _expand_foreach(raw: dict, params: dict) -> dict:
    """dvc.yaml with every ``foreach`` stage expanded into ``name@key`` stages (as DVC does):
    ``${key}`` substituted, ``${item.field}`` read as the parameter it is (``${<foreach>.<key>.field}``,
    resolved to its value in deps), other ``${...}`` left for the checks."""
    stages = {}
    for name, stage in raw["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        path = re.fullmatch(r"\$\{([\w.]+)\}", stage["foreach"]).group(1)
        for key in _lookup(params, path):
            text = yaml.safe_dump(stage["do"]).replace("${key}", key).replace("${item.", "${" + f"{path}.{key}.")
            expanded = yaml.safe_load(text)
            expanded["deps"] = [re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), d)
                                for d in expanded["deps"]]
            stages[f"{name}@{key}"] = expanded
    return {**raw, "stages": stages}


@pytest.fixture(scope="module")
def dvc_yaml():
    return _expand_foreach(yaml.safe_load((ROOT / "dvc.yaml").read_text()),
                           yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture(scope="module")
def params():
    return study.load_yaml(ROOT / "params.yaml")


# ---- params.yaml -> MLBParams ---------------------------------------------------------------------
def test_params_yaml_sections_load_into_mlbparams(params):
    sections = study.check_params(params)
    assert set(sections) >= {"fig1", "fig2", "eval", "fig4", "bench"}
    fig1 = study.params_from_yaml(ROOT / "params.yaml", "fig1")
    assert fig1 == get_preset("mlb", n_frames=5, segment_frames=5, grid=(2, 2))
    assert sections["fig4"].n_frames == sections["fig4"].segment_frames == 5  # one 5-frame segment [paper]
    assert sections["eval"] == get_preset("cpu", n_frames=10, max_new_tokens=6)
    assert all(isinstance(p, MLBParams) and p.score_layer == 2 for p in sections.values())


def test_params_from_yaml_overrides_and_errors():
    p = study.params_from_yaml({"preset": "cpu", "grid": "2x3", "tail_grid": [1, 1], "clip": "x.mp4"})
    assert p == get_preset("cpu", grid=(2, 3), tail_grid=(1, 1))
    assert study.params_from_yaml({}) == MLBParams()
    for bad in ({"preset": "nope"}, {"n_frames": 7}, {"grid": "3"}, {"pool_mode": "median"}):
        with pytest.raises(MLBError):
            study.params_from_yaml(bad)
    with pytest.raises(MLBError):
        study.params_from_yaml({"fig1": {}}, "fig9")


def test_merge_and_set_param_args():
    base = {"model": "embedded", "eval": {"methods": "mlb", "n_frames": 10}}
    merged = study.merge(base, {"eval": {"methods": "a,b"}})
    assert merged == {"model": "embedded", "eval": {"methods": "a,b", "n_frames": 10}}
    assert base["eval"]["methods"] == "mlb"  # not modified
    with pytest.raises(MLBError):
        study.merge(base, {"evl": {"methods": "x"}})
    with pytest.raises(MLBError):
        study.merge(base, {"model": {"x": 1}})
    args = study.set_param_args({"model": PAPER_7B, "eval": {"n_frames": 50, "methods": "a,b", "q": "it's"}})
    assert args == ["-S", f"model='{PAPER_7B}'", "-S", "eval.n_frames=50", "-S", "eval.methods='a,b'",
                    "-S", "eval.q='it\\'s'"]


def test_paper_mode_resolves(params):
    paper = study.paper_params(ROOT)
    assert paper["model"] == f"{PAPER_7B}@sf-llava"  # SF-LLaVA's prompts: the reference numbers' protocol
    models = paper["eval"]["models"].split(",")
    assert f"{PAPER_7B}@sf-llava" in models and all(m.endswith("@sf-llava") for m in models)
    assert any("34b" in m for m in models)
    assert paper["eval"]["judge_model"] == "gpt-3.5-turbo-0125"
    assert "activitynet-qa" in paper["eval"]["benchmarks"] and paper["fig4"]["benchmark"] == "activitynet-qa"
    resolved = study.check_params(paper)
    assert resolved["eval"].n_frames == 50 and resolved["eval"] == get_preset("mlb", max_new_tokens=48)
    assert resolved["fig4"].n_frames == 5
    # the overlay only names keys that exist: same structure as params.yaml
    assert set(study.flatten(paper)) == set(study.flatten(params))


def _copy_repo(dst: Path, dvc_yaml: dict) -> None:
    """The study's sources, plus stand-ins for the intermediate results a default run leaves
    (``dvc repro --dry`` hashes every dep, so a dep that an upstream stage would make must
    exist: DVC issue #9021)."""
    for name in ("dvc.yaml", "params.yaml", "params-paper.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, dst / name)
    (dst / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", dst / ".dvc" / "config")
    (dst / "notebooks").mkdir()
    for f in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(f, dst / "notebooks" / f.name)
    shutil.copytree(ROOT / "mlb_core", dst / "mlb_core", ignore=shutil.ignore_patterns("__pycache__"))
    for stage in dvc_yaml["stages"].values():
        for dep in stage["deps"]:
            path = dst / dep
            if dep.startswith(("data/", "results/")) and not path.exists():
                target = path / "stand-in" if not path.suffix else path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("stand-in\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="dvc exp run needs git")
def test_dvc_dry_run_under_paper_mode_prints_the_plan(tmp_path, dvc_yaml):
    """`mlb study paper --dry` (= dvc exp run --dry -S ...) in a copy of the repo."""
    _copy_repo(tmp_path, dvc_yaml)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "study"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "mlb_core", "study", "paper", "--dry", "--root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    for stage in ("fig1", "fig2_maps", "fig2", "synth", "eval_qa", "fig4_eval", "fig4", "bench", "tables"):
        assert f"Running stage '{stage}'" in text, stage
    assert f"-p model {PAPER_7B}" in text  # figures on LLaVA-NeXT-7B
    assert "--models llava-hf/llava-v1.6-vicuna-7b-hf@sf-llava,llava-hf/llava-v1.6-34b-hf@sf-llava" in text
    assert "--set n_frames=50" in text and "--judge-model gpt-3.5-turbo-0125" in text
    assert "--benchmarks msvd-qa,msrvtt-qa,tgif-qa,activitynet-qa,next-qa,egoschema,intentqa" in text
    assert study.load_yaml(tmp_path / "params.yaml")["model"] == "embedded"  # the dry run changed nothing


# ---- dvc.yaml ---------------------------------------------------------------------------------------
# The sub-command of `mlb` a stage runs -> the module that implements it.
SUBCOMMANDS = {"synth": "mlb_core/evaluation/synthetic.py", "eval": "mlb_core/evaluation/runner.py",
               "heldout": "mlb_core/train/sight.py",
               "bench": "mlb_core/bench/command.py", "train-vision": "mlb_core/train/command.py",
               "probe": "mlb_core/evaluation/probe.py"}


# Data inside the package that stages read (not code): the files of the committed trained vision
# side that the embedded build and the captions' caveat read (not its card, log or codebook, so that
# refreshing those leaves the study up to date).
DATA_DEPS = {f"mlb_core/weights/embedded-vision/{name}"
             for name in (vision_weights.TENSORS, vision_weights.CONFIG, vision_weights.METRICS)}


def _entry_source(stage: dict) -> str:
    """Python source whose imports are the stage's: a notebook's ``mlb_core`` import lines and the
    module of every ``mlb`` sub-command it runs (plus the command line itself)."""
    cmd = stage["cmd"].replace("${launcher}", "mlb")  # `accelerate launch -m mlb_core` runs the same command
    out = []
    nb = re.findall(r"papermill (?:--\S+ )*(\S+\.ipynb)", cmd)
    if nb:
        cells = nbformat.read(str(ROOT / nb[0]), as_version=4).cells
        lines = [ln.strip() for c in cells if c.cell_type == "code" for ln in c.source.splitlines()]
        out += [ln for ln in lines if re.match(r"(from mlb_core[\w.]* import [^(]*$|import mlb_core)", ln)]
    subs = re.findall(r"\bmlb ([a-z-]+)", cmd)
    assert all(x in SUBCOMMANDS for x in subs), f"unknown mlb sub-command in {cmd!r}"
    assert nb or subs, f"no notebook or known mlb sub-command in {cmd!r}"
    if subs:
        out += [f"import {SUBCOMMANDS[x][:-3].replace('/', '.')}" for x in subs] + ["import mlb_core.cli"]
    return "\n".join(out) + "\n"


def _import_closure(source: str, tmp: Path) -> set[str]:
    """Every mlb_core file the source can import, directly or not, function-level imports included
    (the standard library's bytecode scanner, modulefinder), as deps: a wing's folder for a module
    inside a wing, else the top-level file."""
    import modulefinder

    script = tmp / "entry.py"
    script.write_text(source)
    finder = modulefinder.ModuleFinder(path=[str(ROOT)])
    finder.run_script(str(script))
    out = set()
    for name, mod in finder.modules.items():
        if name.startswith("mlb_core") and mod.__file__:
            parts = Path(mod.__file__).resolve().relative_to(ROOT).parts
            out.add("/".join(parts[:2]) if len(parts) > 2 else "/".join(parts))
    return out


def _parameters_cell(nb_path: Path) -> dict[str, object]:
    nb = nbformat.read(str(nb_path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{nb_path.name}: exactly one cell tagged 'parameters'"
    scope: dict[str, object] = {}
    exec(cells[0].source, scope)  # noqa: S102 - our own notebook's defaults
    return {k: v for k, v in scope.items() if not k.startswith("__")}


def test_every_stage_names_its_code_deps_by_wing(dvc_yaml, tmp_path):
    for name, stage in dvc_yaml["stages"].items():
        deps = set(stage["deps"])
        needed = _import_closure(_entry_source(stage), tmp_path)
        assert "mlb_core/__init__.py" in needed, f"{name}: the closure found no mlb_core import"
        assert needed <= deps, f"{name}: missing deps {sorted(needed - deps)}"
        extra = {d for d in deps if d.startswith("mlb_core") and d not in DATA_DEPS} - needed
        assert not extra, f"{name}: deps on code it does not import {sorted(extra)}"
        assert all((ROOT / d).exists() or d.startswith(("data/", "results/")) for d in deps), name
        if deps & DATA_DEPS:  # a stage that loads the trained vision side reads all of it
            assert DATA_DEPS <= deps, f"{name}: misses the trained vision side {sorted(DATA_DEPS - deps)}"


def test_every_stage_param_exists_and_reaches_the_command(dvc_yaml, params):
    flat = study.flatten(params)
    for name, stage in dvc_yaml["stages"].items():
        keys = stage.get("params", [])
        assert keys, f"{name}: no params"
        for key in keys:
            assert key in flat, f"{name}: {key} is not in params.yaml"
            assert "${" + key + "}" in stage["cmd"], f"{name}: reads {key} but does not pass it"
        used = set(re.findall(r"\$\{([\w.]+)\}", stage["cmd"]))
        assert used <= set(keys), f"{name}: passes {sorted(used - set(keys))} without declaring them"


def test_papermill_parameters_match_the_parameters_cells(dvc_yaml):
    for name, stage in dvc_yaml["stages"].items():
        nbs = re.findall(r"papermill (?:--\S+ )*(\S+\.ipynb) (\S+\.ipynb)", stage["cmd"])
        if not nbs:
            continue
        src, out = nbs[0]
        defaults = _parameters_cell(ROOT / src)
        passed = re.findall(r"-p (\w+) ", stage["cmd"])
        assert set(passed) <= set(defaults), f"{name}: unknown notebook parameters {set(passed) - set(defaults)}"
        assert out.startswith("notebooks/out/") and out in [next(iter(o)) if isinstance(o, dict) else o
                                                          for o in stage["outs"]], name


def test_figures_and_tables_are_declared_outputs(dvc_yaml):
    outs = set()
    for stage in dvc_yaml["stages"].values():
        for o in stage.get("outs", []) + stage.get("metrics", []):
            outs.add(next(iter(o)) if isinstance(o, dict) else o)
    for fig in ("fig1_topk_vs_gapool", "fig2_attention_bias", "fig4_grid_ablation"):
        assert {f"figures/{fig}.{ext}" for ext in ("png", "pdf", "csv")} <= outs
    for table in ("openqa", "mc", "ablation", "prefill"):
        assert {f"results/tables/{table}.csv", f"results/tables/{table}.md"} <= outs


# ---- the glue on tiny models ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_attention_bias_maps_match_eager_reference(tiny_eager, one_thread):
    """Every map is the visual part of the last query's attention of the eager full forward."""
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.selection.attention import last_query_attention_eager
    from mlb_core.study.bias import attention_bias_maps

    rng = np.random.default_rng(0)
    clips = {"a": rng.integers(0, 255, (6, 40, 50, 3), dtype=np.uint8),
             "b": rng.integers(0, 255, (6, 40, 50, 3), dtype=np.uint8)}
    maps, orders, labels = attention_bias_maps(tiny_eager, ["a", "b"], ["What?", "Who is there?"], n_frames=3,
                                               windows=2, score_layer=1, progress=False,
                                               loader=lambda v, n: clips[v][:n])
    assert labels[:3] == ["a#1|What?", "a#1|Who is there?", "a#2|What?"] and len(labels) == 8
    assert {c: m.shape for c, m in maps.items()} == {c: (8, 3, 8, 8) for c in analysis.CONDITIONS}
    assert orders["reversed"].tolist() == [2, 1, 0] and orders["repeated"].tolist() == [1, 1, 1]
    tokens = tiny_eager.encode_frames(clips["b"])[3:6]  # input 7: clip b, window 2, question 2
    for cond in analysis.CONDITIONS:
        emb, vis = tiny_eager.build_inputs(render_prompt(tiny_eager.family, "Who is there?"),
                                           tokens[torch.as_tensor(orders[cond])].reshape(-1, tokens.shape[-1]))
        ref = last_query_attention_eager(tiny_eager.language_model, emb, 1)[0, vis].reshape(3, 8, 8)
        np.testing.assert_allclose(maps[cond][7], ref.numpy(), rtol=1e-4, atol=1e-6)


def test_run_eval_feeds_the_tables_and_fig4(tmp_path, one_thread):
    """The evaluation glue of the eval_qa / fig4_eval stages on the tiny model and a tiny probe,
    then the table and Fig. 4 computations on what it wrote."""
    from mlb_core.evaluation.runner import summarize
    from mlb_core.evaluation.synthetic import SynthConfig, generate

    generate(tmp_path / "data" / "synthetic", SynthConfig(n_videos=1, n_frames=12, size=(64, 48)))
    out = tmp_path / "qa"
    from mlb_core.cli import main

    assert main(["eval", "--benchmarks", "synthetic", "--data", str(tmp_path / "data"), "--models", "tiny:llava_next",
                 "--methods", "segattn-topk,mlb", "--preset", "tiny", "--set", "max_new_tokens=3", "--limit", "4",
                 "--out", str(out), "-q"]) == 0
    rows = summarize(out)
    open_t = analysis.qa_table(rows, "open", ["segattn-topk", "mlb"])
    assert open_t["method"].tolist() == ["segattn-topk", "mlb"] and (open_t["n"] == 2).all()
    assert set(open_t["model"]) == {"tiny:llava_next"} and set(open_t["judge"]) == {"offline-keyword"}
    assert len(analysis.ablation_table(rows, ["segattn-topk", "mlb"])) == 2

    f4 = tmp_path / "fig4"
    from mlb_core.evaluation.runner import run_eval

    run_eval(["synthetic"], tmp_path / "data", ["tiny:llava_next"], ["mlb-gapool"], ["tiny"], out=f4,
             overrides={"max_new_tokens": 2}, grids=[(1, 2), (4, 4)], reference=["full"], limit=2, progress=False)
    # what the fig4 notebook does: the runs of one benchmark and model -> the points -> the table
    from mlb_core.evaluation.runner import model_slug
    from mlb_core.study.runs import fig4_inputs, load_runs

    folder = f4 / "synthetic" / model_slug("tiny:llava_next")
    runs = load_runs(folder)
    assert sorted(r.method for r in runs) == ["full", "mlb-gapool", "mlb-gapool"]
    assert all(len(r.predictions) == 2 for r in runs)
    inputs = fig4_inputs(folder, "1x2,4x4", "mlb-gapool", "full", "all")
    table = analysis.fig4_table(inputs.points)
    # tiny preset: 4 frames of 8 x 8 tokens; grids 1x2 and 4x4 -> 128 and 16; full -> 256
    assert table["tokens"].tolist() == [128, 16, 256]
    assert table["grid"].tolist()[:2] == ["1x2", "4x4"] and table["grid"].isna().tolist() == [False, False, True]
    assert inputs.runs[0].params["n_frames"] == 4 and (table["n"] == 2).all()
    only = fig4_inputs(folder, "4x4")  # a grid subset keeps the reference
    assert len(only.points) == 2 and {p["grid"] for p in only.points} == {None, "4x4"}

    # and the tables notebook: each table's spec builds it from the runs and writes CSV + Markdown
    from mlb_core.study.tables import write_table

    written = write_table("ablation", out, "segattn-topk,mlb", tmp_path / "tables")
    assert written.frame["method"].tolist() == ["segattn-topk", "mlb"]
    assert [p.name for p in written.paths] == ["ablation.csv", "ablation.md"]
    assert written.paths[1].read_text() == written.markdown and "tiny:llava_next" in written.markdown


def test_launcher_is_checked(params):
    bad = dict(params, launcher="srun mlb")
    with pytest.raises(MLBError, match="launcher"):
        study.check_sections(bad)
    study.check_sections(dict(params, launcher="accelerate launch -m mlb_core"))
    study.check_sections(dict(params, launcher="torchrun --standalone --nproc-per-node 3 -m mlb_core"))
    for wrong in ("torchrun --standalone --nproc-per-node 0 -m mlb_core", "torchrun --nproc-per-node 2 -m mlb_core",
                  "torchrun --standalone --nproc-per-node N -m mlb_core"):
        with pytest.raises(MLBError, match="launcher"):
            study.check_sections(dict(params, launcher=wrong))
    assert study.paper_params(ROOT)["launcher"] == "accelerate launch -m mlb_core"  # paper mode shards


def test_train_recipe_is_a_known_recipe(params):
    """train.recipe names the recipe that stage train_embedded trains: a recipe of the training wing
    (which `mlb train-vision` checks before it loads anything)."""
    from mlb_core.train.vision import COMMITTED_MINUTES, RECIPES

    assert params["train"]["recipe"] in RECIPES and RECIPES[params["train"]["recipe"]] == RECIPES["committed"]
    # the stage's plan is the entry points' default plan, and the committed weights' own
    log = json.loads((ROOT / "mlb_core/weights/embedded-vision/training_log.json").read_text())
    assert params["train"]["minutes"] == COMMITTED_MINUTES == log["minutes_budget"]
    study.check_sections(dict(params, train=dict(params["train"], recipe="outline")))
    with pytest.raises(MLBError, match="unknown key 'recipes'"):
        study.check_sections(dict(params, train={"recipes": "outline"}))


def test_notebook_threads_is_a_positive_count(params):
    """OMP_NUM_THREADS of the notebook stages: 0 would be no valid OpenMP setting."""
    study.check_sections(dict(params, notebook_threads=1))
    for wrong in (0, "two", True):
        with pytest.raises(MLBError, match="notebook_threads"):
            study.check_sections(dict(params, notebook_threads=wrong))
