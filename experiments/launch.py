"""Hand a recipe's rows to a Hydra launcher (parallel jobs on SLURM or this machine), and
collect the finished run folders into outcomes afterwards.

A recipe's rows are not a grid (each row has its own overrides), so no sweeper can produce
them; the launcher is given the list of rows' overrides directly, as a sweeper would. Each
job runs `run_row` in its run folder (`<runs_dir>/<recipe>/<Job.key>/`: the row key, and
`/seed<k>` for seed k > 0), which leaves
behind what `collect` reads: `job.json` + `summary.json` after a success, `failed.json` with
the exception after a failure, and Hydra's job log in every case. Jobs that need the same
classifier share it through the model store (one trains, the others wait for it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks  # what a sweeper receives (hydra-core 1.3)
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig

from experiments.engine import Job, cached_outcome, job_digests, record_job
from experiments.tables import FAILED, NOT_RUN, Outcome
from src.data.atomic import atomic_write_text
from src.pipeline.compose import CONF_DIR

log = logging.getLogger(__name__)

#: `--launcher` name -> the config in conf/hydra/launcher/.
LAUNCHERS = {"basic": "basic", "submitit_local": "local", "submitit_slurm": "slurm"}
JOB_NAME = "recipe_job"
FAILED_FILE = "failed.json"
CODE_ROOT = CONF_DIR.parent


def run_row(cfg: DictConfig) -> dict[str, Any]:
    """The task of one launched job: the pipeline, then its record for `collect`."""
    from src.pipeline.stages import run_pipeline

    out = Path(cfg.paths.output_dir)
    digests = job_digests(cfg)  # before the run, which may fill in values
    start = time.monotonic()
    try:
        summary = run_pipeline(cfg)
        if not summary.get("headline"):
            raise RuntimeError("the run wrote no headline")
    except Exception as err:
        log.exception("The job failed")  # into the job's log, which the table points to
        reason = f"{type(err).__name__}: {err}"
        atomic_write_text(out / FAILED_FILE, json.dumps({"reason": reason}) + "\n")
        raise
    with contextlib.suppress(FileNotFoundError):
        (out / FAILED_FILE).unlink()
    overrides = list(HydraConfig.get().overrides.task)
    record_job(out, overrides, digests, time.monotonic() - start)
    return summary


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Environment variables for the jobs started inside the block (inherited by local
    processes and exported to SLURM jobs), restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def launch(
    jobs: Sequence[Job],
    sweep_dir: Path,
    launcher: str,
    options: Sequence[str] = (),
    project_root: Path = CODE_ROOT,
) -> list[JobStatus]:
    """Run `jobs` through the Hydra launcher `launcher` (a key of `LAUNCHERS`) and wait for
    them; `options` are `key=value` settings of `hydra.launcher` (e.g. `partition=gpu`).
    Every job's run folder must be `sweep_dir/<Job.key>`; `project_root` is the jobs'
    `paths.root_dir` (caches, model store). Returns each job's status."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
    for job in jobs:
        if job.run_dir != sweep_dir / job.key:
            raise ValueError(f"job {job.key}: run folder {job.run_dir} not in {sweep_dir}")
    base_overrides = [
        f"hydra/launcher={LAUNCHERS[launcher]}",
        f"hydra.sweep.dir={sweep_dir}",
        *(f"hydra.launcher.{option}" for option in options),
    ]
    # The jobs import `experiments` and `src` from this checkout wherever they run.
    pythonpath = os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")]))
    GlobalHydra.instance().clear()
    with (
        _environment(PROJECT_ROOT=str(project_root), PYTHONPATH=pythonpath),
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=JOB_NAME),
    ):
        loader = GlobalHydra.instance().config_loader()
        config = loader.load_configuration("config", base_overrides, run_mode=RunMode.MULTIRUN)
        HydraConfig.instance().set_config(config)
        context = HydraContext(config_loader=loader, callbacks=Callbacks(config))
        hydra_launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=run_row, config=config
        )
        sweep = [[*job.overrides, f"hydra.sweep.subdir={job.key}"] for job in jobs]
        returns = hydra_launcher.launch(sweep, initial_job_idx=0)
    return [result.status for result in returns]


def job_log(run_dir: Path) -> Path | None:
    """The Hydra log of the job in `run_dir`, if it started."""
    path = run_dir / f"{JOB_NAME}.log"
    return path if path.is_file() else None


def collect(jobs: Sequence[Job], project_root: Path = CODE_ROOT) -> dict[str, Outcome]:
    """The outcome of each job (by `Job.key`) from its run folder: done (job.json +
    summary.json), failed (with the reason and the path of its log), or not run."""
    outcomes = {}
    for job in jobs:
        done = cached_outcome(job, project_root)
        if done is not None:
            outcomes[job.key] = done
            continue
        log_file = job_log(job.run_dir)
        failed = job.run_dir / FAILED_FILE
        if failed.is_file():
            reason = json.loads(failed.read_text()).get("reason", "")
        elif log_file is not None:
            reason = "no result: the job was killed or is still running"
        else:
            outcomes[job.key] = Outcome(NOT_RUN)
            continue
        outcomes[job.key] = Outcome(
            FAILED, reason=reason, run_dir=str(job.run_dir), log=str(log_file or "")
        )
    return outcomes
