"""Every command block of README.md runs as written.

A command is run verbatim with three substitutions only: `.venv/bin/python` becomes this
interpreter, the README's example dataset paths (`/data/...`) become generated copies in the
same on-disk format, and the placeholders of earlier outputs (`<run>`, `<date_time>`) become
those outputs. The budget overrides of the README's "Quick runs" block are appended, and
`PROJECT_ROOT` sends data, caches and run folders to a temporary folder. `make test` is
checked with `make -n` (running it here would run this suite inside itself).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO

README = REPO / "README.md"
PYTHON = ".venv/bin/python"
STAMP = ".venv/.installed"  # make's install step: the interpreter here is already set up
RUN_PLACEHOLDER = "outputs/wsss/runs/<run>"
SWEEP_PLACEHOLDER = "outputs/wsss/multiruns/<date_time>"


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


def _generate_datasets(folder: Path) -> dict[str, Path]:
    """Small generated copies standing in for the README's example dataset folders."""
    from src.data.generators.brats import generate_brats
    from src.data.generators.ksdd2 import generate_ksdd2
    from src.data.generators.tcga_lgg import generate_tcga_lgg
    from src.data.generators.voc import generate_voc

    roots = {
        "/data/BraTS2021": folder / "BraTS2021",
        "/data/kaggle_3m": folder / "kaggle_3m",
        "/data/VOCdevkit": folder / "VOCdevkit",
        "/data/KolektorSDD2": folder / "KolektorSDD2",
    }
    generate_brats(roots["/data/BraTS2021"], n_cases=6, seed=1, shape=(64, 64, 16))
    generate_tcga_lgg(roots["/data/kaggle_3m"], n_patients=6, seed=0, size=64, n_slices=(8, 12))
    generate_voc(roots["/data/VOCdevkit"], n_train=16, n_val=8, seed=0)
    generate_ksdd2(roots["/data/KolektorSDD2"], n_train=24, n_test=12, seed=0, defect_fraction=0.5)
    return {example: str(root) for example, root in roots.items()}


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
        arguments, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, f"{shlex.join(arguments)}\n{result.stderr[-3000:]}"
    return result


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


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    text = README.read_text()
    quick = quick_overrides(text)
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROJECT_ROOT": str(project)}
    env.pop("HYDRA_FULL_ERROR", None)
    replacements = {PYTHON: sys.executable, **_generate_datasets(tmp_path / "data")}
    outputs = project / "outputs" / "wsss"
    ran: list[str] = []
    for command in readme_commands(text):
        how = kind(command)
        if how == "make test":
            dry = _run(["make", "-n", "test", "-o", STAMP, f"PY={sys.executable}"], env)
            assert f"{sys.executable} -m pytest" in dry.stdout
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
    assert "src.report" in ran
    runs = sorted((outputs / "runs").iterdir())
    assert all((run / "summary.json").is_file() for run in runs), "a run folder without results"
    jobs = [p for p in next((outputs / "multiruns").iterdir()).iterdir() if p.is_dir()]
    assert len(jobs) == 30 and all((job / "summary.json").is_file() for job in jobs)
    assert not any(set(job.name) & set("=, ") for job in jobs)
    assert list((tmp_path / "recipe-results").rglob("demo_table1.md"))
