"""Run a recipe: one `run_pipeline` job per row, then the table in the paper's layout.

Every row becomes a Hydra composition of `experiment=<recipe>` plus the row's overrides, the
data root of its dataset and the caller's extra overrides (last wins), run in this process
into `<runs_dir>/<recipe>/<row key>/`. With `seeds` > 1 every row runs once per seed
(`Settings.seeds`), each seed in its own folder and with its own classifier, and the tables
give the mean ± std over the seeds. A finished job is reused when its overrides and
composed config are the same (`job.json`, written only after success), so a recipe can be
resumed or grown with `only` and every table shows all rows finished so far; a job whose
config equals, but for `task_name`, one another recipe finished (Table 2's multi-scale
Cfd-CAM is Table 1's) shows that run's result instead of running again. A job that raises
is reported as
"failed: <reason>" and the others still run. Trained classifiers are shared through the
model store, so the rows of one dataset train once.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.recipes import DATASETS, Recipe, Row
from experiments.tables import (
    DONE,
    FAILED,
    NOT_RUN,
    Outcome,
    aggregate_seeds,
    render_csv,
    render_markdown,
)
from src.data.atomic import atomic_write_text
from src.models.backbones import stage_names
from src.pipeline.compose import compose_config
from src.pipeline.store import fingerprint
from src.pipeline.upgrades import composed_before

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB_FILE = "job.json"


def _generate_tcga(root: Path) -> None:
    from src.data.generators.tcga_lgg import generate_tcga_lgg

    generate_tcga_lgg(root, n_patients=6, seed=0, size=64, n_slices=(8, 12), normal_patients=1)


def _generate_voc(root: Path) -> None:
    from src.data.generators.voc import generate_voc

    generate_voc(root, n_train=16, n_val=8, seed=0)


def _generate_ksdd2(root: Path) -> None:
    from src.data.generators.ksdd2 import generate_ksdd2

    generate_ksdd2(root, n_train=24, n_test=12, seed=0, defect_fraction=0.5, size=(126, 46))


@dataclass(frozen=True)
class DemoData:
    """How `--demo` (or `--plumbing`) replaces one dataset: a generator writing it in the real
    on-disk format (None: a demo data config such as `data=demo` generates it itself,
    docs/data.md), the budget overrides and the demo's experiment configs
    (`experiment/demo.yaml`, the budgets `data=demo` has when no recipe replaces them).
    `demo_wins`: the demo's experiments come after the recipe's, so the rows train the
    demo's own classifier (the KSDD2 demo: the paper's fine-tuning settings assume ImageNet
    weights, which a demo trained from scratch cannot use); otherwise the recipe's win.
    `replaces_recipe`: the rows run the demo's own config (its data config and the budgets
    it applies) with only their overrides, not the recipe's experiment: the demo config is
    already the recipe scaled to a CPU, and a row on `make run`'s data and modality then
    shares the classifier `make run` stored. `layer_names`: (recipe network's stage, demo
    network's stage) pairs, for rows that name a stage (the VOC demo's VGG16-BN has its
    max-pools at other indices than the recipes' plain VGG16)."""

    generate: Callable[[Path], None] | None
    overrides: tuple[str, ...]
    experiments: tuple[str, ...] = ()
    note: str = ""
    demo_wins: bool = False
    replaces_recipe: bool = False
    layer_names: tuple[tuple[str, str], ...] = ()

    def rename_layers(self, overrides: Sequence[str]) -> list[str]:
        """The row's overrides with the CAM stages it names (`cam.layers=[features.4]`, the
        recipe network's) replaced by the demo network's stages at the same depth
        (`layer_names`: (recipe's, demo's) pairs)."""
        names = dict(self.layer_names)
        out = []
        for override in overrides:
            key, sep, value = override.partition("=")
            if names and key.lstrip("+~") == "cam.layers" and value.startswith("["):
                parts = [p.strip() for p in value.strip("[]").split(",")]
                value = "[" + ",".join(names.get(p, p) for p in parts) + "]"
            out.append(f"{key}{sep}{value}")
        return out


_DEMO_EVAL = (
    "finetune.epochs=1",
    "finetune.batch_size=8",
    "segmenter.epochs=1",
    "segmenter.net.filters=[8,16,32,64,128,128,128]",
    "eval.limit=6",
    "eval.positive_fraction=0.75",
    "eval.batch_size=2",
    "eval.mask_workers=0",
    "trainer.enable_progress_bar=false",
    "logger=none",
)
_DEMO_SUPCON = ("pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.module.warm_epochs=0")
# The LT recipes' VGG16 starts from random weights in the demo (no ImageNet file needed).
_DEMO_VGG = ("backbone.net.weights=null",)

_PLUMBING_NOTE = (
    "PLUMBING run on generated data in the real formats with tiny budgets (1 epoch, 64 px, "
    "6 evaluated images{vgg}): checks the plumbing, numbers are not comparable with the paper"
)
#: `--plumbing`: every dataset generated small, tiny budgets. For the tests of the recipes.
PLUMBING_DATA: dict[str, DemoData] = {
    "brats": DemoData(
        None,
        ("data=demo", "data.image_size=64", *_DEMO_SUPCON, *_DEMO_EVAL),
        ("demo",),
        _PLUMBING_NOTE,
    ),
    "tcga_lgg": DemoData(
        _generate_tcga, ("data.image_size=64", *_DEMO_SUPCON, *_DEMO_EVAL), (), _PLUMBING_NOTE
    ),
    "voc": DemoData(
        _generate_voc, ("data.image_size=64", *_DEMO_VGG, *_DEMO_EVAL), (), _PLUMBING_NOTE
    ),
    "ksdd2": DemoData(
        _generate_ksdd2, ("data.image_size=[128,64]", *_DEMO_VGG, *_DEMO_EVAL), (), _PLUMBING_NOTE
    ),
}
#: The VOC demo's network (VGG16-BN) has its five max-pools at other indices than the plain
#: VGG16 the VOC recipes name (Table 1's single stages): the same depth, the demo's index.
_VOC_DEMO_STAGES = tuple(
    zip(stage_names("vgg16", "none"), stage_names("vgg16", "batch"), strict=True)
)
#: `--demo`: the datasets' demos with budgets a classifier learns from, where one exists
#: (BraTS: `data=demo`, every modality; TCGA-LGG: `data=demo_tcga`; KSDD2: `data=demo_ksdd2`;
#: VOC: `data=demo_voc`);
#: the others still run their plumbing budgets and say so.
DEMO_DATA: dict[str, DemoData] = {
    **PLUMBING_DATA,
    "brats": DemoData(
        None,
        ("data=demo",),
        (),
        "DEMO run on `data=demo` (`make run`'s generated BraTS-format phantoms and budgets, "
        "the row's modality, up to 10 fine-tuning epochs with an early stop; ResNet-18 "
        "trained from scratch, no SupCon; 12 tumour and 3 normal slices of the test cases). "
        "Numbers show the methods' ordering on phantoms, not the paper's data",
        replaces_recipe=True,
    ),
    "tcga_lgg": DemoData(
        None,
        ("data=demo_tcga",),
        (),
        "DEMO run on `data=demo_tcga` (generated kaggle_3m-format slices, 15 test slices), "
        "with its classifier: ResNet-18 with BatchNorm and max pooling trained from scratch "
        "with the demo's budgets (no SupCon). Numbers show the methods' ordering on phantoms, "
        "not the paper's data",
        replaces_recipe=True,
    ),
    "voc": DemoData(
        None,
        ("data=demo_voc",),
        (),
        "DEMO run on `data=demo_voc` (generated VOC2012-format scenes of 20 shape x colour x "
        "pattern classes, all 200 images of its val list), with its classifier: VGG16-slim "
        "(VGG16-BN at 1/8 width, max-pooling head) trained from scratch at 160 px (no ImageNet "
        "weights offline; a single stage Sk is the VGG16-BN max-pool at the paper's depth k). "
        "Numbers show the methods' ordering on synthetic scenes, not the paper's data",
        replaces_recipe=True,
        layer_names=_VOC_DEMO_STAGES,
    ),
    "ksdd2": DemoData(
        None,
        ("data=demo_ksdd2", "backbone=vgg16_slim"),
        ("demo_ksdd2",),
        "DEMO run on `data=demo_ksdd2` (generated KSDD2-format surfaces, every image of the "
        "split the title names), with its classifier: VGG16-slim trained from scratch (no "
        "ImageNet weights offline). Numbers show the methods' ordering on phantoms, not the "
        "paper's data",
        demo_wins=True,
    ),
}


def demo_data(dataset: str, settings: Settings) -> DemoData:
    """How the dataset is replaced in `--demo` or `--plumbing` mode."""
    return (PLUMBING_DATA if settings.plumbing else DEMO_DATA)[dataset]


@dataclass
class Settings:
    """Where data, runs and tables live, and which rows run with which extra overrides."""

    roots: dict[str, str] = field(default_factory=dict)
    runs_dir: Path = REPO_ROOT / "outputs" / "experiments"
    results_dir: Path = REPO_ROOT / "experiments" / "results"
    demo: bool = False
    # With demo: every dataset small with tiny budgets (the recipes' tests), results/plumbing/.
    plumbing: bool = False
    demo_data_dir: Path = REPO_ROOT / ".cache" / "demo" / "experiments"
    vgg_weights: str | None = None
    extra: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    rerun: bool = False
    project_root: Path = REPO_ROOT
    # None: rows run one after the other in this process; else a key of
    # `experiments.launch.LAUNCHERS` (parallel jobs) with `hydra.launcher` options.
    launcher: str | None = None
    launcher_options: tuple[str, ...] = ()
    # Every row runs once per seed: seed k of N gets `seed=<the config's seed> + k`.
    seeds: int = 1


@dataclass(frozen=True)
class Job:
    """One run of a row: seed `index` of the recipe's seeds, `seed` its value (None when the
    recipe runs one seed, whose value is whatever the config says)."""

    row: Row
    overrides: tuple[str, ...]
    run_dir: Path
    index: int = 0
    seed: int | None = None

    @property
    def key(self) -> str:
        """The job's run folder below the recipe's: the row key for seed 0 (the folder a
        one-seed run uses, so its results are reused), `<row key>/seed<k>` for seed k."""
        return seed_key(self.row.key, self.index)


def seed_key(row_key: str, index: int) -> str:
    """The run folder (below the recipe's) of seed `index` of the row `row_key`."""
    return row_key if index == 0 else f"{row_key}/seed{index}"


class RecipeConfigError(ValueError):
    """A row's config does not compose or validate; nothing has been run."""


def compose_job_config(
    overrides: Sequence[str], run_dir: Path, project_root: Path = REPO_ROOT
) -> DictConfig:
    """The config `python -m src.run <overrides>` would run, with the run folder `run_dir`."""
    return compose_config(overrides, run_dir, cwd=project_root)


def _selected(row: Row, settings: Settings) -> bool:
    if settings.demo and not row.demo:
        return False
    return not settings.only or any(fnmatch.fnmatch(row.key, p) for p in settings.only)


def job_overrides(recipe: Recipe, row: Row, settings: Settings) -> tuple[str, ...] | str:
    """The row's overrides, or the reason it cannot run (no data root for its dataset)."""
    if row.dataset not in DATASETS:
        raise ValueError(f"recipe {recipe.name}, row {row.key}: unknown dataset {row.dataset!r}")
    overrides = [f"task_name={recipe.name}", *row.overrides]
    if settings.demo and not recipe.on_demo_config:
        overrides = demo_data(row.dataset, settings).rename_layers(overrides)
    experiments = [] if recipe.experiment is None else [recipe.experiment]
    if settings.demo and not recipe.on_demo_config:
        demo = demo_data(row.dataset, settings)
        if demo.replaces_recipe:
            experiments = []
        elif demo.demo_wins:
            experiments += demo.experiments
        else:
            experiments[:0] = demo.experiments
    if len(experiments) == 1:
        overrides.insert(0, f"experiment={experiments[0]}")
    elif experiments:  # the later wins: the recipe's settings, or the demo's (`demo_wins`)
        overrides.insert(0, f"experiment=[{','.join(experiments)}]")
    if recipe.on_demo_config:
        pass  # the default config generates and reads its own data
    elif settings.demo:
        demo = demo_data(row.dataset, settings)
        if demo.generate is not None:
            overrides.append(f"data.root={Path(settings.demo_data_dir) / row.dataset}")
        overrides += demo.overrides
    else:
        root = settings.roots.get(row.dataset)
        if not root:
            return f"no data root for {row.dataset} (--{row.dataset.replace('_', '-')}-root)"
        overrides.append(f"data.root={root}")
    if recipe.imagenet_weights and settings.vgg_weights:
        weights = "null" if settings.vgg_weights.lower() == "none" else settings.vgg_weights
        overrides.append(f"backbone.net.weights={weights}")
    return (*overrides, *settings.extra)


def config_digest(cfg: DictConfig) -> str:
    """A hash of a job's composed config before interpolation: it changes when a config file
    the job reads changes (e.g. a budget in `experiment/demo.yaml`), not only its overrides."""
    return fingerprint(OmegaConf.to_container(cfg, resolve=False))


def result_digest(cfg: DictConfig) -> str:
    """A hash of everything in a job's config that can change its result: all of it but
    `task_name`, which only names the run (two recipes' rows with the same settings differ
    only there)."""
    return _result_fingerprint(OmegaConf.to_container(cfg, resolve=False))


def _result_fingerprint(container: dict) -> str:
    return fingerprint({k: v for k, v in container.items() if k != "task_name"})


def job_digests(cfg: DictConfig) -> dict[str, str]:
    """What `job.json` records of a job's config, taken before the run fills in values."""
    return {"config": config_digest(cfg), "result": result_digest(cfg)}


def known_digests(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The config and result digests a finished run of this job may have recorded: today's
    first, then those of the config as each earlier version's files composed it
    (`composed_before`: options added since at the value they were added at count as
    absent), so adding such an option does not re-run every finished job."""
    today = OmegaConf.to_container(cfg, resolve=False)
    forms = [today, *composed_before(today)]
    return [fingerprint(form) for form in forms], [_result_fingerprint(form) for form in forms]


def _finished_record(run_dir: Path) -> dict | None:
    """The `job.json` of a run folder whose job finished (its summary written), else None."""
    job_file = run_dir / JOB_FILE
    if not (job_file.is_file() and (run_dir / "summary.json").is_file()):
        return None
    try:
        return json.loads(job_file.read_text())
    except ValueError:
        return None


def _reused(run_dir: Path, record: dict, how: str) -> Outcome:
    headline = json.loads((run_dir / "summary.json").read_text()).get("headline")
    return Outcome(DONE, headline, how, str(run_dir), record.get("seconds"))


def cached_outcome(
    job: Job, project_root: Path = REPO_ROOT, runs_dir: Path | None = None
) -> Outcome | None:
    """The finished result of the same job: in its run folder (the same overrides and the same
    composed config; a record without the config's digest, from an older version, is not
    trusted), or, given `runs_dir`, in another recipe's folder below it whose config differs
    only in `task_name` (`result_digest`). Digests recorded by earlier versions count
    (`known_digests`); a reused record gains today's, so the rows of recipes run later find
    it."""
    recorded = _finished_record(job.run_dir)
    same_overrides = recorded is not None and recorded.get("overrides") == list(job.overrides)
    if not same_overrides and runs_dir is None:
        return None
    configs, results = known_digests(compose_job_config(job.overrides, job.run_dir, project_root))
    if same_overrides:
        if recorded.get("config") in configs:
            today = {"config": configs[0], "result": results[0]}
            if any(recorded.get(kind) != digest for kind, digest in today.items()):
                recorded = {**recorded, **today}
                _write_record(job.run_dir, recorded)
            return _reused(job.run_dir, recorded, "reused")
        log.info("%s: the config changed since it ran; running it again", job.run_dir)
    if runs_dir is None:
        return None
    for job_file in sorted(Path(runs_dir).rglob(JOB_FILE)):  # seeds k > 0 a level deeper
        twin = job_file.parent
        if twin == job.run_dir:
            continue
        record = _finished_record(twin)
        if record is not None and record.get("result") in results:
            log.info("%s: the same job finished in %s; reusing its result", job.run_dir, twin)
            return _reused(twin, record, f"reused from {twin.relative_to(runs_dir)}")
    return None


def base_seed(overrides: Sequence[str], run_dir: Path, project_root: Path) -> int:
    """The `seed` of the composed job config: what a one-seed run trains with (42 unless an
    experiment config or an override says otherwise)."""
    return int(compose_job_config(overrides, run_dir, project_root).seed)


def seed_jobs(row: Row, overrides: tuple[str, ...], run_dir: Path, settings: Settings) -> list[Job]:
    """The row's job per seed. Seed 0 keeps the overrides and folder of a one-seed run (its
    seed is the config's), so its finished result and classifier are reused; seed k > 0 adds
    `seed=<base + k>` last and runs in `<run_dir>/seed<k>`. One seed composes nothing."""
    if settings.seeds == 1:
        return [Job(row, overrides, run_dir)]
    base = base_seed(overrides, run_dir, settings.project_root)
    jobs = [Job(row, overrides, run_dir, 0, base)]
    for k in range(1, settings.seeds):
        key = seed_key(row.key, k)
        jobs.append(Job(row, (*overrides, f"seed={base + k}"), run_dir.parent / key, k, base + k))
    return jobs


def plan(recipe: Recipe, settings: Settings) -> tuple[list[Job], dict[str, Outcome]]:
    """The jobs (one per seed) of the recipe's reproduced rows that have a data root, and
    the outcomes of the rows that have none."""
    if settings.seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {settings.seeds}")
    if recipe.imagenet_weights and not settings.demo and not settings.vgg_weights:
        raise RecipeConfigError(
            f"recipe {recipe.name} starts VGG16 from ImageNet weights (docs/training.md): "
            "give the local "
            "state_dict with --vgg-weights /path/to/vgg16-397923af.pth (or --vgg-weights none "
            "to train from random weights)"
        )
    jobs, outcomes = [], {}
    for row in recipe.jobs():
        overrides = job_overrides(recipe, row, settings)
        if isinstance(overrides, str):
            outcomes[row.key] = Outcome(NOT_RUN, reason=overrides)
        else:
            run_dir = Path(settings.runs_dir) / recipe.name / row.key
            jobs += seed_jobs(row, overrides, run_dir, settings)
    return jobs, outcomes


def row_outcomes(
    jobs: Sequence[Job], job_outcomes: dict[str, Outcome], seeds: int
) -> dict[str, Outcome]:
    """The outcome of each row (by row key) from those of its jobs (by `Job.key`): the job's
    own with one seed, else the seeds' aggregate (`aggregate_seeds`); a job missing from
    `job_outcomes` has not run."""
    if seeds == 1:
        return {job.row.key: job_outcomes.get(job.key, Outcome(NOT_RUN)) for job in jobs}
    per_row: dict[str, list[tuple[int | None, Outcome]]] = {}
    for job in jobs:
        outcome = job_outcomes.get(job.key, Outcome(NOT_RUN))
        per_row.setdefault(job.row.key, []).append((job.seed, outcome))
    return {key: aggregate_seeds(per_seed) for key, per_seed in per_row.items()}


def validate_jobs(jobs: Sequence[Job], settings: Settings) -> None:
    """Compose and validate every job's config, so a typo stops the recipe before anything
    trains; raises RecipeConfigError naming the row."""
    from src.pipeline.config import validate_config

    for job in jobs:
        try:
            cfg = compose_job_config(job.overrides, job.run_dir, settings.project_root)
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            validate_config(cfg)
        except Exception as err:
            row = job.row
            raise RecipeConfigError(
                f"row {row.key!r} ({' '.join(filter(None, (row.group, row.method)))}): {err}"
            ) from err


def run_job(job: Job, settings: Settings) -> Outcome:
    """Run one row through `run_pipeline`; any exception becomes a "failed" outcome."""
    from src.pipeline.stages import run_pipeline

    start = time.monotonic()
    try:
        cfg = compose_job_config(job.overrides, job.run_dir, settings.project_root)
        digests = job_digests(cfg)
        summary = run_pipeline(cfg)
    except Exception as err:  # noqa: BLE001 - one row's failure must not lose the others
        log.exception("job %s failed", job.key)
        reason = f"{type(err).__name__}: {err}"
        return Outcome(FAILED, reason=reason, run_dir=str(job.run_dir))
    seconds = time.monotonic() - start
    if not summary.get("headline"):
        return Outcome(FAILED, reason="the run wrote no headline", run_dir=str(job.run_dir))
    record_job(job.run_dir, job.overrides, digests, seconds)
    return Outcome(DONE, summary["headline"], "", str(job.run_dir), seconds)


def record_job(
    run_dir: Path, overrides: Sequence[str], digests: dict[str, str], seconds: float
) -> None:
    """Mark a finished job (`job.json`: its overrides, config digests (`job_digests`) and
    time) so `cached_outcome` reuses it."""
    _write_record(run_dir, {"overrides": list(overrides), **digests, "seconds": seconds})


def _write_record(run_dir: Path, record: dict) -> None:
    atomic_write_text(Path(run_dir) / JOB_FILE, json.dumps(record, indent=2) + "\n")


def command_line(job: Job) -> str:
    """The equivalent `python -m src.run` command of a job."""
    args = [*job.overrides, f"hydra.run.dir={job.run_dir}"]
    return "python -m src.run " + " ".join(shlex.quote(arg) for arg in args)


def mode_folder(settings: Settings) -> str:
    """Where a mode's tables and runs go, below the results or runs folder."""
    return "plumbing" if settings.plumbing else "demo" if settings.demo else ""


def results_paths(recipe: Recipe, settings: Settings) -> dict[str, Path]:
    """The recipe's table files; with several seeds named `<recipe>_seeds<N>`, so that a
    seeds run does not overwrite the one-seed tables (their cells mean different things)."""
    out = Path(settings.results_dir) / mode_folder(settings)
    stem = recipe.name if settings.seeds == 1 else f"{recipe.name}_seeds{settings.seeds}"
    return {
        "markdown": out / f"{stem}.md",
        "csv": out / f"{stem}.csv",
        "paired": out / f"{stem}_paired.md",
        "sweep": out / f"{stem}_sweep",
    }


def seeds_note(seeds: int) -> str:
    """What the cells are when every row ran `seeds` times; "" for one seed."""
    if seeds == 1:
        return ""
    return (
        f"{seeds} seeds per row (`seed` = the config's seed + 0..{seeds - 1}; each seed "
        "trains its own classifier): every cell is the mean ± std over the seeds of each "
        "seed's value (population std, ddof=0; it replaces any per-image std the notes "
        "below mention); "
        "(k/n seeds) marks a row with only k finished seeds"
    )


def mode_note(recipe: Recipe, settings: Settings) -> str:
    """Which runs the table shows: the data (or demo) and, with several seeds, what the
    cells aggregate."""
    note = _data_note(recipe, settings)
    seeds = seeds_note(settings.seeds)
    return f"{note}; {seeds}" if seeds else note


def _data_note(recipe: Recipe, settings: Settings) -> str:
    if recipe.on_demo_config:
        return "our runs: the default (demo) config of `make run` and its stored classifier"
    if settings.demo:
        datasets = dict.fromkeys(row.dataset for row in recipe.jobs())
        notes = dict.fromkeys(demo_data(d, settings).note for d in datasets)
        vgg = ", random-init VGG16" if recipe.imagenet_weights else ""
        note = "; ".join(n.format(vgg=vgg) for n in notes)
        return note + (f"; {recipe.demo_note}" if recipe.demo_note else "")
    roots = ", ".join(f"{k}={v}" for k, v in sorted(settings.roots.items()))
    return f"our runs: data roots {roots or 'none'}"


def write_tables(recipe: Recipe, outcomes: dict[str, Outcome], settings: Settings) -> list[Path]:
    """The Markdown and CSV tables (atomically); the paired comparison against the recipe's
    reference row once it and another row have finished; for a delta sweep also
    `src.report`'s sweep table and metric-versus-delta plots of the finished jobs."""
    from experiments.paired import render_paired  # scipy: only once there are tables

    paths = results_paths(recipe, settings)
    atomic_write_text(
        paths["markdown"], render_markdown(recipe, outcomes, mode_note(recipe, settings))
    )
    atomic_write_text(paths["csv"], render_csv(recipe, outcomes, settings.seeds))
    written = [paths["markdown"], paths["csv"]]
    paired = render_paired(recipe, outcomes, mode_note(recipe, settings))
    if paired is not None:
        atomic_write_text(paths["paired"], paired)
        written.append(paths["paired"])
    finished = [
        Path(seed_outcome.run_dir)
        for outcome in outcomes.values()
        for _, seed_outcome in outcome.per_seed()
        if seed_outcome.status == DONE
    ]
    if recipe.layout == "sweep" and finished:
        written += write_sweep_plots(
            Path(settings.runs_dir) / recipe.name, paths["sweep"], finished
        )
    return written


def write_sweep_plots(runs_dir: Path, out_dir: Path, job_dirs: Sequence[Path]) -> list[Path]:
    """`src.report`'s table, CSV and metric-versus-delta plots (Fig. 4/5) of the finished
    jobs `job_dirs` below `runs_dir` (every seed's: a point's seeds become its mean and band),
    not of every run folder there, so results of seeds the table does not show stay out."""
    from src.evaluation.sweep_report import write_report

    return write_report(runs_dir, out_dir, job_dirs)


def prepare_demo_data(jobs: Sequence[Job], settings: Settings) -> None:
    """Generate the demo datasets the jobs read (once; the generators write atomically)."""
    for dataset in dict.fromkeys(job.row.dataset for job in jobs):
        generate = demo_data(dataset, settings).generate
        root = Path(settings.demo_data_dir) / dataset
        if generate is not None and not root.exists():
            log.info("generating demo %s data in %s", dataset, root)
            generate(root)


def run_recipe(
    recipe: Recipe, settings: Settings, dry_run: bool = False
) -> tuple[dict[str, Outcome], list[Path]]:
    """Run the recipe's selected rows (reusing finished ones) and write its tables.

    Returns the outcome of every row (by `Row.key`) and the files written. `dry_run` only
    composes and validates the selected rows' configs and prints the equivalent commands."""
    jobs, missing = plan(recipe, settings)
    if dry_run:
        jobs = [job for job in jobs if _selected(job.row, settings)]
        validate_jobs(jobs, settings)
        for job in jobs:
            label = " ".join(filter(None, (job.row.group, job.row.method)))
            print(f"# {recipe.name} / {label} (key {job.key})\n{command_line(job)}")
        return missing, []
    to_run, job_outcomes = [], {}
    for job in jobs:
        selected = _selected(job.row, settings)
        # --rerun repeats the selected rows only; the others keep their finished results.
        cached = (
            None
            if settings.rerun and selected
            else cached_outcome(job, settings.project_root, settings.runs_dir)
        )
        if cached is not None:
            job_outcomes[job.key] = cached
        elif selected:
            to_run.append(job)
        # else outside the demo subset or `only`: not run, the table notes say which rows ran

    def outcomes() -> dict[str, Outcome]:
        return {**missing, **row_outcomes(jobs, job_outcomes, settings.seeds)}

    validate_jobs(to_run, settings)
    if settings.demo:
        prepare_demo_data(to_run, settings)
    if settings.launcher is not None:
        job_outcomes.update(launch_and_collect(recipe, to_run, settings))
        return outcomes(), write_tables(recipe, outcomes(), settings)
    written: list[Path] = []
    for number, job in enumerate(to_run, 1):
        log.info("[%s %d/%d] %s", recipe.name, number, len(to_run), command_line(job))
        job_outcomes[job.key] = run_job(job, settings)
        written = write_tables(recipe, outcomes(), settings)  # progress survives an interruption
    if not to_run:
        written = write_tables(recipe, outcomes(), settings)
    return outcomes(), written


def launch_and_collect(
    recipe: Recipe, jobs: Sequence[Job], settings: Settings
) -> dict[str, Outcome]:
    """Run `jobs` as parallel jobs of `settings.launcher`, wait, and read their outcomes; a
    launcher error (e.g. a SLURM job killed) is logged and what finished is still collected."""
    from experiments.launch import collect, launch

    assert settings.launcher is not None
    if not jobs:  # every selected row finished earlier
        return {}
    sweep_dir = Path(settings.runs_dir) / recipe.name
    try:
        launch(jobs, sweep_dir, settings.launcher, settings.launcher_options, settings.project_root)
    except Exception:  # noqa: BLE001 - the finished rows must still reach the table
        log.exception("the %s launcher stopped; collecting the finished rows", settings.launcher)
    return collect(jobs, settings.project_root)


def collect_recipe(recipe: Recipe, settings: Settings) -> tuple[dict[str, Outcome], list[Path]]:
    """The table from the run folders of earlier (e.g. launched) jobs, running nothing."""
    from experiments.launch import collect

    jobs, outcomes = plan(recipe, settings)
    outcomes.update(row_outcomes(jobs, collect(jobs, settings.project_root), settings.seeds))
    return outcomes, write_tables(recipe, outcomes, settings)


def summary_line(recipe: Recipe, outcomes: dict[str, Outcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{recipe.name}: {parts or 'no jobs'}"
