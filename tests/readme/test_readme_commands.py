"""Every command block of README.md works as written.

Three levels, from cheap to complete:

- every command *composes*: its Hydra config (each job of a sweep) is composed in-process the
  way `python -m src.run` composes it, resolved and put through the start-up checks; a recipe
  command runs with `--dry-run` (compose and validate every row); `make test` is checked with
  `make -n` (running it here would run this suite inside itself);
- a representative set *runs* (`make run`, a finished run resumed, `stage=masks`, the TCGA-LGG
  command, the sweep with each swept list cut to its first two values, `src.report` on it,
  the demo Table 1 recipe), with the budget overrides of the README's "Quick runs" block;
- every command runs as written (the 30-job sweep, VGG16 on VOC, ...): a `release` test,
  which `make test-all` runs.

A command is run verbatim with three substitutions only: `.venv/bin/python` becomes this
interpreter, the README's example dataset paths (`/data/...`) become generated copies in the
same on-disk format, and the placeholders of earlier outputs (`<run>`, `<date_time>`) become
those outputs. `PROJECT_ROOT` sends data, caches and run folders to a temporary folder.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers.processes import REPO

README = REPO / "README.md"
PYTHON = ".venv/bin/python"
STAMP = ".venv/.installed"  # make's install step: the interpreter here is already set up
RUN_PLACEHOLDER = "outputs/wsss/runs/<run>"
SWEEP_PLACEHOLDER = "outputs/wsss/multiruns/<date_time>"
DATASET_EXAMPLES = ("/data/BraTS2021", "/data/kaggle_3m", "/data/VOCdevkit", "/data/KolektorSDD2")


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block, trailing `# comments` removed, lines continued
    with a backslash joined."""
    commands = []
    for block in fenced_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def quick_overrides(text: str) -> list[str]:
    """The overrides of the ```text block under the README's "Quick runs" heading."""
    section = text.split("### Quick runs", 1)[1]
    return fenced_blocks(section, "text")[0].split()


def kind(command: str) -> str:
    """How a README command is run; unknown commands fail the test until handled here."""
    words = shlex.split(command)
    if words[0] == "srun" or "hydra/launcher=slurm" in words or "submitit_slurm" in words:
        return "cluster"
    if words[:2] in (["make", "run"], ["make", "test"]):
        return " ".join(words[:2])
    if words[0] == PYTHON and words[1:3] == ["-m", "src.run"]:
        return "src.run"
    if words[0] == PYTHON and words[1:3] == ["-m", "src.report"]:
        return "src.report"
    if words[0] == PYTHON and words[1] == "experiments/run_recipe.py":
        return "recipe"
    raise AssertionError(f"README command not covered by this test: {command}")


def test_readme_commands_are_all_covered_and_quick_overrides_documented():
    text = README.read_text()
    commands = readme_commands(text)
    kinds = {kind(c) for c in commands}
    assert {"make run", "make test", "src.run", "src.report", "recipe"} <= kinds
    quick = quick_overrides(text)
    assert quick and all("=" in item for item in quick)
    assert any(c.startswith(f"{PYTHON} -m src.run -m ") for c in commands), "the sweep"


def _generate_datasets(folder: Path, only: tuple[str, ...] = DATASET_EXAMPLES) -> dict[str, str]:
    """Small generated copies standing in for the README's example dataset folders."""
    from src.data.generators.brats import generate_brats
    from src.data.generators.ksdd2 import generate_ksdd2
    from src.data.generators.tcga_lgg import generate_tcga_lgg
    from src.data.generators.voc import generate_voc

    generators: dict[str, tuple[str, Callable[[Path], object]]] = {
        "/data/BraTS2021": (
            "BraTS2021",
            lambda root: generate_brats(root, n_cases=6, seed=1, shape=(64, 64, 16)),
        ),
        "/data/kaggle_3m": (
            "kaggle_3m",
            lambda root: generate_tcga_lgg(root, n_patients=6, seed=0, size=64, n_slices=(8, 12)),
        ),
        "/data/VOCdevkit": (
            "VOCdevkit",
            lambda root: generate_voc(root, n_train=16, n_val=8, seed=0),
        ),
        "/data/KolektorSDD2": (
            "KolektorSDD2",
            lambda root: generate_ksdd2(root, n_train=24, n_test=12, seed=0, defect_fraction=0.5),
        ),
    }
    roots = {}
    for example in only:
        name, generate = generators[example]
        generate(folder / name)
        roots[example] = str(folder / name)
    return roots


def _substitute(command: str, replacements: dict[str, str]) -> list[str]:
    examples = re.findall(r"/data/[^\s/]+", command)
    missing = [example for example in examples if example not in replacements]
    for old, new in replacements.items():
        command = command.replace(old, new)
    missing += re.findall(r"<\w+>", command)
    assert not missing, f"no stand-in for {missing} in: {command}"
    return shlex.split(command)


def _run(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        arguments, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, f"{shlex.join(arguments)}\n{result.stderr[-3000:]}"
    return result


def _check_make_test(env: dict[str, str]) -> None:
    dry = _run(["make", "-n", "test", "-o", STAMP, f"PY={sys.executable}"], env)
    assert f"{sys.executable} -m pytest" in dry.stdout


# --- every command composes --------------------------------------------------------------


def _jobs(arguments: list[str]) -> list[list[str]]:
    """The overrides of each job `python -m src.run <arguments>` runs, as the entry point
    hands them to Hydra (build_cam options upserted, a resumed run's own overrides); a
    multirun (`-m`) is expanded by Hydra's own sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.pipeline.overrides import cam_options_as_upserts
    from src.pipeline.resume import resumed_arguments

    arguments = resumed_arguments(cam_options_as_upserts(arguments))
    overrides = [a for a in arguments if a not in ("-m", "--multirun")]
    if len(overrides) == len(arguments):
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


def _compose_and_check(overrides: list[str], output_dir: Path, project: Path) -> None:
    """Compose one job's config as the entry point would, resolve every value and run the
    start-up checks `run_pipeline` runs before any data are read."""
    from src.pipeline.compose import compose_config
    from src.pipeline.stages import start_up_checks

    cfg = compose_config(overrides, output_dir, cwd=project)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    start_up_checks(cfg)


def _stand_in_runs(folder: Path, project: Path) -> tuple[Path, Path, Path]:
    """A finished run (its config.yaml: what `stage=masks` reads), a run stopped before it
    finished (its .hydra/overrides.yaml: what `resume=` reads) and a sweep folder."""
    from src.pipeline.compose import compose_config

    finished, stopped, sweep = folder / "finished", folder / "stopped", folder / "sweep"
    cfg = compose_config(["cam=gradcam"], finished, cwd=project)
    finished.mkdir(parents=True)
    OmegaConf.save(cfg, finished / "config.yaml", resolve=True)
    (stopped / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(["cam=gradcam", "eval.limit=2"]), stopped / ".hydra" / "overrides.yaml"
    )
    sweep.mkdir()
    return finished, stopped, sweep


@pytest.mark.slow
def test_every_readme_command_composes(tmp_path, monkeypatch, capsys):
    """Each README command's config, for every job it would run, composes and passes the
    start-up checks (on empty stand-ins of the dataset folders: nothing is read)."""
    from experiments import run_recipe

    text = README.read_text()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("PROJECT_ROOT", str(project))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    replacements = {PYTHON: sys.executable}
    for example in DATASET_EXAMPLES:
        stand_in = tmp_path / "data" / Path(example).name
        stand_in.mkdir(parents=True)
        replacements[example] = str(stand_in)
    finished, stopped, sweep = _stand_in_runs(tmp_path / "runs", project)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROJECT_ROOT": str(project)}
    checked: dict[str, int] = {}
    for command in readme_commands(text):
        how = kind(command)
        if how == "make test":
            _check_make_test(env)
            checked[how] = checked.get(how, 0) + 1
            continue
        if how == "make run":
            command = f"{PYTHON} -m src.run"  # the Makefile's run target, no ARGS
            dry = _run(["make", "-n", "run", "-o", STAMP, f"PY={sys.executable}"], env)
            assert f"{sys.executable} -m src.run" in dry.stdout
        run = stopped if "resume=" in command else finished
        arguments = _substitute(
            command,
            {**replacements, RUN_PLACEHOLDER: str(run), SWEEP_PLACEHOLDER: str(sweep)},
        )
        if "src.report" in arguments:  # not a Hydra command: the executed set runs it
            assert arguments[arguments.index("src.report") + 1 :] == [str(sweep)]
        elif "experiments/run_recipe.py" in arguments:
            start = arguments.index("experiments/run_recipe.py") + 1
            assert run_recipe.main([*arguments[start:], "--dry-run"]) == 0
            assert "src.run" in capsys.readouterr().out
        else:
            start = arguments.index("src.run") + 1
            jobs = _jobs(arguments[start:])
            for number, job in enumerate(jobs):
                _compose_and_check(job, tmp_path / "out" / str(number), project)
            if "-m" in arguments[start:]:
                assert len(jobs) == _swept_jobs(command), command
        checked[how] = checked.get(how, 0) + 1
    assert {"make run", "make test", "src.run", "src.report", "recipe", "cluster"} <= set(checked)


# --- commands that run -------------------------------------------------------------------


def _shrunk_sweep(command: str, values: int = 2) -> str:
    """The sweep with each swept list cut to its first `values` values."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if "=" in word and "," in word and "[" not in word:
            key, listed = word.split("=", 1)
            words[i] = f"{key}={','.join(listed.split(',')[:values])}"
    return shlex.join(words)


def _is_sweep(command: str) -> bool:
    return "-m" in shlex.split(command)[3:]  # after `python -m src.run`


def _swept_jobs(command: str) -> int:
    """How many jobs a sweep runs: the product of its swept lists' lengths."""
    words = shlex.split(command)
    return math.prod(w.count(",") + 1 for w in words if "=" in w and "[" not in w)


def _execute(
    commands: list[str],
    tmp_path: Path,
    replacements: dict[str, str],
    project: Path,
) -> list[str]:
    """Run the README commands in order (cluster commands compose instead); returns what ran."""
    text = README.read_text()
    quick = quick_overrides(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROJECT_ROOT": str(project)}
    env.pop("HYDRA_FULL_ERROR", None)
    replacements = {PYTHON: sys.executable, **replacements}
    outputs = project / "outputs" / "wsss"
    ran: list[str] = []
    for command in commands:
        how = kind(command)
        if how == "make test":
            _check_make_test(env)
            continue
        if how == "cluster":
            _check_cluster_command(_substitute(command, replacements), env)
            ran.append(how)
            continue
        if how == "make run":
            arguments = [
                "make",
                "run",
                "-o",
                STAMP,
                f"PY={sys.executable}",
                f"ARGS={' '.join(quick)}",
            ]
        else:
            if RUN_PLACEHOLDER in command:
                finished = sorted(p.parent for p in (outputs / "runs").glob("*/cam_maps.npz"))
                replacements[RUN_PLACEHOLDER] = str(finished[0])
            if SWEEP_PLACEHOLDER in command:
                (sweep,) = (outputs / "multiruns").iterdir()
                replacements[SWEEP_PLACEHOLDER] = str(sweep)
            arguments = _substitute(command, replacements)
            if how == "src.run":
                arguments += quick
            elif how == "recipe":
                arguments += [f"--override={item}" for item in quick]
                arguments += [f"--runs-dir={tmp_path / 'recipe-runs'}"]
                arguments += [f"--results-dir={tmp_path / 'recipe-results'}"]
        result = _run(arguments, env)
        console = result.stdout + result.stderr
        assert "\N{ELECTRIC LIGHT BULB} Tip" not in console and "Traceback" not in console
        ran.append(how)
    return ran


def _check_outputs(project: Path, tmp_path: Path, sweep_jobs: int) -> None:
    outputs = project / "outputs" / "wsss"
    runs = sorted((outputs / "runs").iterdir())
    assert all((run / "summary.json").is_file() for run in runs), "a run folder without results"
    jobs = [p for p in next((outputs / "multiruns").iterdir()).iterdir() if p.is_dir()]
    assert len(jobs) == sweep_jobs and all((job / "summary.json").is_file() for job in jobs)
    assert not any(set(job.name) & set("=, ") for job in jobs)
    assert list((tmp_path / "recipe-results").rglob("demo_table1.md"))


def _check_cluster_command(arguments: list[str], env: dict[str, str]) -> None:
    """A command for a SLURM allocation cannot run here: its configs must compose instead.

    A sweep is composed for its first job (`--cfg job`: Hydra prints the job's config and
    exits; `-m` and the other values of each swept key left out); a recipe validates every
    row's config (`--dry-run`)."""
    if "src.run" in arguments:
        start = arguments.index("src.run") + 1  # Hydra's options and overrides follow it
        job = [a for a in arguments[:start] if a != "srun"]
        job += [a.split(",")[0] if "=" in a else a for a in arguments[start:] if a != "-m"]
        result = _run([*job, "--cfg", "job"], env)
        assert "cam:" in result.stdout
    else:
        _run([*arguments, "--dry-run"], env)


def _representative(commands: list[str]) -> list[str]:
    """`make run`, a resume, `stage=masks`, the TCGA-LGG command (no other test runs that
    dataset through the pipeline), the sweep cut to two values per list, `src.report` and
    the demo Table 1 recipe: each kind of command the README shows, run for real."""
    chosen = []
    for command in commands:
        how = kind(command)
        if how in ("make run", "src.report", "recipe"):
            # The first of each (the recipe: demo_table1); the others, such as the KSDD2
            # demo's recipes and --seeds, are composed here and run by the release test.
            if how not in {kind(c) for c in chosen}:
                chosen.append(command)
        elif how == "src.run" and _is_sweep(command):
            chosen.append(_shrunk_sweep(command))
        elif how == "src.run" and re.search(r"resume=|stage=masks|data=tcga_lgg", command):
            chosen.append(command)
    return chosen


@pytest.mark.slow
def test_representative_readme_commands_run(tmp_path, demo_brats):
    """The representative set runs as the README has it, with the quick budgets. The demo
    data `make run` generates on first use are the session's copy (`demo_brats`); the
    release test below generates its own."""
    text = README.read_text()
    commands = _representative(readme_commands(text))
    kinds = [kind(c) for c in commands]
    assert kinds.count("make run") == kinds.count("src.report") == kinds.count("recipe") == 1
    assert sum("resume=" in c for c in commands) == 1
    assert sum("stage=masks" in c for c in commands) == 1
    (sweep,) = [c for c in commands if _is_sweep(c)]
    assert 2 <= _swept_jobs(sweep) <= 4
    project = tmp_path / "project"
    (project / ".cache" / "demo").mkdir(parents=True)
    (project / ".cache" / "demo" / demo_brats.name).symlink_to(demo_brats)
    roots = _generate_datasets(tmp_path / "data", only=("/data/kaggle_3m",))
    ran = _execute(commands, tmp_path, roots, project)
    assert len(ran) == len(commands)
    _check_outputs(project, tmp_path, _swept_jobs(sweep))


@pytest.mark.slow
@pytest.mark.release
def test_every_readme_command_runs(tmp_path):
    """Every README command as written (the 30-job sweep too), on generated data."""
    text = README.read_text()
    commands = readme_commands(text)
    project = tmp_path / "project"
    project.mkdir()
    ran = _execute(commands, tmp_path, _generate_datasets(tmp_path / "data"), project)
    assert "src.report" in ran
    (sweep,) = [c for c in commands if kind(c) == "src.run" and _is_sweep(c)]
    assert _swept_jobs(sweep) == 30
    _check_outputs(project, tmp_path, 30)
