"""`resume=<run folder>`: finish an interrupted run in its own folder, with its own settings.

Two halves. Before Hydra composes anything, `resumed_arguments` turns the command line into
the interrupted run's (its `.hydra/overrides.yaml`) plus whatever the new command adds, and
points Hydra's run folder at the old one, so the run is composed as it was and completes its
folder. Inside a training stage, `resume_checkpoint` hands Lightning the stage's `last.ckpt`
after checking that the network it would finish is the one the run started: a checkpoint of
other data or hyper-parameters would end up in the classifier store under the wrong key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from src.data.atomic import atomic_write_text
from src.pipeline.config import ConfigError
from src.pipeline.store import training_key
from src.pipeline.upgrades import check_not_before_cam_options

log = logging.getLogger(__name__)

RESUME_KEY = "resume"
RUN_DIR_KEY = "hydra.run.dir"
#: The checkpoint of every epoch's end, `<run>/checkpoints/<stage>/last.ckpt`.
LAST_CHECKPOINT = "last"
#: Written beside a stage's checkpoints when it starts training: what its weights depend on.
KEY_FILE = "key.json"
#: Written into the run folder last, once every stage of the run has finished.
FINISHED_MARKER = "config.yaml"


class RunComplete(Exception):
    """`resume=` names a run that finished: there is nothing to do, and redoing its last
    stage would overwrite its results."""

    def __init__(self, run: Path) -> None:
        super().__init__(
            f"{run} is complete (its config.yaml is written when a run finishes): nothing "
            "to resume, nothing changed. Start a new run (without resume=) to run it again."
        )
        self.run = run


def _parse(overrides: Sequence[str], source: str) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:  # Hydra's parser raises its own OverrideParseException
        raise ConfigError(RESUME_KEY, f"cannot read the overrides in {source}: {err}") from err


def _key(override: Override) -> str:
    """The key an override sets, without Hydra's `+`/`++`/`~` prefix (`x=1` and `+x=1` set
    the same key)."""
    if override.package is None:
        return override.key_or_group
    return f"{override.key_or_group}@{override.package}"


def saved_overrides(run: Path) -> list[str]:
    """The command-line overrides the run in `run` was started with."""
    if not run.is_dir():
        raise ConfigError(RESUME_KEY, f"{run} is not a folder (give the folder of a run)")
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise ConfigError(RESUME_KEY, f"{path} not found: {run} is not a run folder of src.run")
    saved = OmegaConf.load(path)
    if not OmegaConf.is_list(saved) or not all(isinstance(item, str) for item in saved):
        raise ConfigError(RESUME_KEY, f"{path} is not a list of overrides")
    return list(saved)


def resumed_arguments(arguments: Sequence[str]) -> list[str]:
    """The command line (`sys.argv[1:]`) that finishes the run named by `resume=<folder>`.

    The run's saved overrides come first, then the new command's other overrides: a key the
    run set may be repeated with the same value but not changed (ConfigError naming it), a
    key it did not set is added. `hydra.run.dir` becomes the run's folder. Without `resume`
    the arguments are returned unchanged; RunComplete if the run has finished."""
    arguments = list(arguments)
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    parsed = dict(zip(overrides, _parse(overrides, "the command line"), strict=True))
    resume = [o for o in parsed.values() if _key(o) == RESUME_KEY]
    if not resume or resume[-1].value() in (None, ""):
        return arguments
    if any(a in ("-m", "--multirun") for a in arguments):
        raise ConfigError(RESUME_KEY, "resumes one run; it cannot be combined with --multirun")
    run = Path(str(resume[-1].value())).expanduser().resolve()
    saved = saved_overrides(run)
    if (run / FINISHED_MARKER).is_file():
        raise RunComplete(run)
    saved_parsed = list(zip(saved, _parse(saved, f"{run}/.hydra/overrides.yaml"), strict=True))
    check_not_before_cam_options(run, [(text, _key(o)) for text, o in saved_parsed])
    before = {_key(o): (text, o) for text, o in saved_parsed}  # the last one of a key wins
    added = []
    for text, override in parsed.items():
        key = _key(override)
        if key == RESUME_KEY:
            continue
        if key == RUN_DIR_KEY:
            if Path(str(override.value())).expanduser().resolve() != run:
                raise ConfigError(RESUME_KEY, f"the run's folder is {run}, not {text}")
            continue
        if key not in before:
            added.append(text)
        elif before[key][1].value() != override.value():
            raise ConfigError(
                RESUME_KEY,
                f"the run in {run} was started with {before[key][0]}; this command says {text} "
                f"(drop {key} from the command, or start a new run without resume)",
            )
    flags = [a for a in arguments if a not in parsed]
    kept = [text for text, o in saved_parsed if _key(o) != RESUME_KEY]
    return [*flags, *kept, *added, f"{RESUME_KEY}={run}", f"{RUN_DIR_KEY}={run}"]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def _plain_key(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """`training_key` as JSON would store it (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(training_key(cfg, stage), sort_keys=True, default=str))


def record_training_key(cfg: DictConfig, stage: str, checkpoints: Path) -> None:
    """Note what the weights of `stage` depend on beside its checkpoints (rank 0 only)."""
    text = json.dumps(_plain_key(cfg, stage), indent=2, sort_keys=True)
    atomic_write_text(checkpoints / KEY_FILE, text)


def resume_checkpoint(cfg: DictConfig, stage: str, checkpoints: Path) -> str | None:
    """The `last.ckpt` of `stage` to continue from when this run resumes, else None.

    The run must write into the folder it resumes (`python -m src.run resume=<run>` does),
    so that Lightning's ModelCheckpoint restores its best score and best path; and the
    stage's training key must be the one its checkpoints were made with."""
    if not cfg.get(RESUME_KEY):
        return None
    run = Path(cfg.resume).expanduser().resolve()
    if run != Path(cfg.paths.output_dir).expanduser().resolve():
        raise ConfigError(
            RESUME_KEY,
            f"a resumed run writes into its own folder {run}, not {cfg.paths.output_dir} "
            "(python -m src.run resume=<run> sets it)",
        )
    last = checkpoints / f"{LAST_CHECKPOINT}.ckpt"
    if not last.is_file():
        log.info("No %s checkpoint in %s: training %s from the start", stage, checkpoints, stage)
        return None
    recorded = checkpoints / KEY_FILE
    if recorded.is_file():
        then, now = _flat(json.loads(recorded.read_text())), _flat(_plain_key(cfg, stage))
        changed = sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))
        if changed:
            raise ConfigError(
                RESUME_KEY,
                f"{last} was trained with other settings than this command's: "
                f"{', '.join(changed[:5])} differ (see {recorded})",
            )
    log.info("Resuming %s from %s", stage, last)
    return str(last)
