"""Every recipe's jobs compose with Hydra (experiment config + row overrides + data roots),
validate, and carry the settings of the paper they reproduce."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from experiments.engine import (
    RecipeConfigError,
    compose_job_config,
    job_overrides,
    plan,
    validate_jobs,
)
from experiments.recipes import RECIPES
from src.models.backbones import stage_names
from src.pipeline.compose import compose_config
from src.pipeline.config import cam_target_layers
from src.pipeline.store import training_key


def _config(settings, recipe_name, row_key):
    recipe = RECIPES[recipe_name]
    row = next(r for r in recipe.rows if r.key == row_key)
    overrides = job_overrides(recipe, row, settings)
    return compose_job_config(overrides, settings.runs_dir / "x", settings.project_root)


def test_cfdcam_rows_use_the_authors_settings(settings, fake_roots):
    cfg = _config(settings, "cfdcam_table1", "brats-t1-ce-scorecam-2020")
    assert cfg.modality == "t1ce" and cfg.data.modality == "t1ce"
    assert cfg.data.root == fake_roots["brats"]
    assert cfg.cam.name == "scorecam" and cfg.cam.mask == "densecrf"
    assert cfg.backbone.net.arch == "resnet18" and cfg.backbone.net.norm == "instance"
    assert (cfg.pretrain.enabled, cfg.pretrain.epochs, cfg.pretrain.batch_size) == (True, 100, 512)
    assert (cfg.finetune.epochs, cfg.finetune.module.lr) == (10, 1e-4)
    assert cfg.eval.split == "test" and cfg.eval.limit is None
    assert cfg.task_name == "cfdcam_table1"

    tcga = _config(settings, "cfdcam_table1", "tcga-lgg-cfd-cam-ours")
    assert tcga.data._target_.endswith("TCGALGGDataModule")
    assert tcga.data.root == fake_roots["tcga_lgg"]
    assert list(tcga.cam.options.scales) == [1, 2] and tcga.cam.mask == "densecrf"

    ss = _config(settings, "cfdcam_table2", "brats-t2-flair-cfd-cam-ss")
    assert list(ss.cam.options.scales) == [1] and ss.modality == "flair"


def test_ltgrad_rows_select_the_paper_stages_and_methods(settings, fake_roots):
    s1 = _config(settings, "ltgrad_table1", "s1")
    stages = cam_target_layers(stage_names("vgg16", "none"), s1.cam.layers)
    assert stages == ["features.4"] and s1.cam.name == "gradcam"
    fused = _config(settings, "ltgrad_table1", "s3ps4ps5")
    assert cam_target_layers(stage_names("vgg16", "none"), fused.cam.layers) == [
        "features.16",
        "features.23",
        "features.30",
    ]
    assert fused.cam.options.fusion == "sum" and fused.cam.options.delta is None

    lt = _config(settings, "ltgrad_table3", "ltgrad-cam-l-5-delta-20")
    assert (lt.cam.name, lt.cam.layers, lt.cam.options.delta, lt.cam.mask) == (
        "ltgradcam",
        5,
        20,
        "otsu",
    )
    assert lt.backbone.net.arch == "vgg16" and lt.backbone.net.input_norm == "imagenet"
    assert lt.backbone.net.weights == settings.vgg_weights
    assert lt.pretrain.enabled is False
    assert lt.data._target_.endswith("VOCDataModule")

    gradcam = _config(settings, "ltgrad_table4", "grad-cam")
    assert (gradcam.cam.name, gradcam.cam.layers, gradcam.cam.mask) == ("gradcam", 1, "otsu")
    assert gradcam.data._target_.endswith("KSDD2DataModule")

    fig5 = _config(settings, "ltgrad_fig5", "ltlayer-cam-delta-30")
    assert (fig5.eval.split, fig5.cam.name, fig5.cam.options.delta, fig5.cam.layers) == (
        "train",
        "ltlayercam",
        30,
        5,
    )
    assert _config(settings, "ltgrad_fig4", "ltfullgrad-delta-0").eval.split == "test"


def test_plumbing_mode_uses_generated_data_and_small_budgets(settings):
    plumbing = dataclasses.replace(settings, demo=True, plumbing=True, vgg_weights=None)
    cfg = _config(plumbing, "cfdcam_table1", "brats-t2-flair-cfd-cam-ours")
    assert cfg.data.root.endswith("demo/brats2021") and cfg.data.demo.n_cases == 24
    assert (cfg.pretrain.epochs, cfg.finetune.epochs, cfg.eval.limit) == (1, 1, 6)
    ksdd2 = _config(plumbing, "ltgrad_fig4", "ltgrad-cam-delta-40")
    assert ksdd2.data.root == str(plumbing.demo_data_dir / "ksdd2")
    assert ksdd2.backbone.net.weights is None and list(ksdd2.data.image_size) == [128, 64]
    # TCGA-LGG: the small generated folder, not the TCGA demo's recipe.
    tcga = _config(plumbing, "cfdcam_table1", "tcga-lgg-cfd-cam-ours")
    assert tcga.data._target_ == "src.data.tcga_lgg.TCGALGGDataModule"
    assert tcga.data.root == str(plumbing.demo_data_dir / "tcga_lgg")
    assert (tcga.data.image_size, tcga.finetune.epochs, tcga.eval.limit) == (64, 1, 6)


def test_demo_mode_runs_the_ksdd2_rows_on_the_ksdd2_demo_and_its_classifier(settings):
    demo = dataclasses.replace(settings, demo=True, vgg_weights=None)
    plain = compose_job_config(["data=demo_ksdd2"], settings.runs_dir, settings.project_root)
    for recipe, key in (("ltgrad_table4", "grad-cam"), ("ltgrad_fig5", "ltfullgrad-delta-90")):
        cfg = _config(demo, recipe, key)
        assert cfg.data._target_ == "src.data.demo.DemoKSDD2DataModule"
        # The demo's classifier, not the paper's ImageNet fine-tuning settings.
        assert cfg.backbone.net == plain.backbone.net and cfg.finetune == plain.finetune
        assert cfg.eval.limit is None
    assert _config(demo, "ltgrad_fig5", "ltfullgrad-delta-90").eval.split == "train"


def test_demo_mode_runs_the_tcga_rows_on_the_tcga_demo_and_its_classifier(settings):
    """`--demo`: the Cfd-CAM tables' TCGA-LGG rows run `data=demo_tcga` with its budgets, so
    every row (Cfd-CAM, Grad-CAM, ...) evaluates the classifier `python -m src.run
    data=demo_tcga` stored, on the same slices."""
    demo = dataclasses.replace(settings, demo=True, vgg_weights=None)
    plain = compose_job_config(["data=demo_tcga"], settings.runs_dir, settings.project_root)
    rows = (
        ("cfdcam_table1", "tcga-lgg-cfd-cam-ours"),
        ("cfdcam_table1", "tcga-lgg-grad-cam-2016"),
        ("cfdcam_table2", "tcga-lgg-cfd-cam-ss"),
    )
    for recipe, key in rows:
        cfg = _config(demo, recipe, key)
        assert cfg.data == plain.data and cfg.data._target_ == "src.data.demo.DemoTCGADataModule"
        assert training_key(cfg, "finetune") == training_key(plain, "finetune")
        assert cfg.eval == plain.eval and cfg.cam.mask == "densecrf"
    assert _config(demo, *rows[1]).cam.name == "gradcam"
    assert list(_config(demo, *rows[2]).cam.options.scales) == [1]


def test_demo_mode_runs_the_voc_rows_on_the_voc_demo_and_its_classifier(settings):
    """`--demo`: the LT-Grad-CAM VOC tables run `data=demo_voc` with its budgets, so every
    row evaluates the classifier `python -m src.run data=demo_voc` stored; Table 1's single
    stages hook the demo VGG16-BN's max-pool at the same depth as the paper's VGG16 one."""
    demo = dataclasses.replace(settings, demo=True, vgg_weights=None)
    plain = compose_job_config(["data=demo_voc"], settings.runs_dir, settings.project_root)
    bn_stages = stage_names("vgg16", "batch")
    for i in range(5):
        cfg = _config(demo, "ltgrad_table1", f"s{i + 1}")
        assert cfg.data == plain.data and cfg.data._target_ == "src.data.demo.DemoVOCDataModule"
        assert training_key(cfg, "finetune") == training_key(plain, "finetune")
        assert cfg.cam.name == "gradcam" and list(cfg.cam.layers) == [bn_stages[i]]
        assert cam_target_layers(bn_stages, cfg.cam.layers) == [bn_stages[i]]
    fused = _config(demo, "ltgrad_table1", "s3ps4ps5")
    assert cfg.eval == plain.eval and fused.cam.layers == 3
    proposed = _config(demo, "ltgrad_table3", "ltgrad-cam-l-5-delta-20")
    assert (proposed.cam.name, proposed.cam.layers, proposed.cam.options.delta) == (
        "ltgradcam",
        5,
        20,
    )
    assert proposed.backbone.net == plain.backbone.net and proposed.finetune == plain.finetune
    truncated = _config(demo, "ltgrad_table2", "ltgrad-cam-l-1-delta-0")
    assert truncated.cam.options.delta == 0 and truncated.cam.layers == 1
    # Without --demo the rows keep the paper's VGG16 and its stage names.
    real = _config(settings, "ltgrad_table1", "s1")
    assert list(real.cam.layers) == ["features.4"] and real.data._target_.endswith("VOCDataModule")


def test_missing_roots_and_weights_are_reported(settings):
    recipe = RECIPES["cfdcam_table1"]
    no_tcga = dataclasses.replace(settings, roots={"brats": settings.roots["brats"]})
    row = next(r for r in recipe.jobs() if r.dataset == "tcga_lgg")
    assert "--tcga-lgg-root" in job_overrides(recipe, row, no_tcga)
    no_weights = dataclasses.replace(settings, vgg_weights=None)
    with pytest.raises(RecipeConfigError, match="--vgg-weights"):
        plan(RECIPES["ltgrad_table2"], no_weights)
    bad = dataclasses.replace(settings, extra=(*settings.extra, "cam.options.delta=120"))
    jobs, _ = plan(RECIPES["ltgrad_table2"], bad)
    with pytest.raises(RecipeConfigError, match="grad-campp.*cam.options.delta"):
        validate_jobs(jobs[:1], bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_job_composes_and_validates(settings, name):
    jobs, skipped = plan(RECIPES[name], settings)
    assert not skipped and len(jobs) == len(RECIPES[name].jobs())
    validate_jobs(jobs, settings)
    for job in jobs[:3]:
        cfg = compose_job_config(job.overrides, job.run_dir, settings.project_root)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved["paths"]["output_dir"] == str(job.run_dir)
        if RECIPES[name].on_demo_config:  # the demo's own generated data
            assert resolved["data"]["root"].endswith("demo/brats2021")
            assert resolved["data"]["demo"]["n_cases"] > 0
        else:
            assert resolved["data"]["root"] in settings.roots.values()


def test_demo_table_rows_share_the_classifier_of_the_default_run(settings, tmp_path):
    """Every row of demo_table1 but the SupCon ablation has the store key of a plain
    `python -m src.run`, so it evaluates the classifier `make run` trained instead of
    training its own; the ablation differs from it only in SupCon pretraining."""
    default = compose_config([], tmp_path / "default", cwd=settings.project_root)
    jobs, _ = plan(RECIPES["demo_table1"], settings)
    assert [job.row.method for job in jobs] == [
        "Grad-CAM (2016)",
        "ScoreCAM (2020)",
        "LayerCAM (2021)",
        "Cfd-CAM (ours)",
        "Cfd-CAM (ours), with SupCon",
        "Cfd-CAM -> U-Net (self-trained)",
        "Opt. U-net (2021)",
    ]
    for job in jobs:
        cfg = compose_job_config(job.overrides, job.run_dir, settings.project_root)
        assert cfg.eval == default.eval and cfg.data == default.data
        key, plain = training_key(cfg, "finetune"), training_key(default, "finetune")
        if job.row.method != "Cfd-CAM (ours), with SupCon":
            assert key == plain
            continue
        # The demo's scaled SupCon budget (conf/experiment/demo_supcon.yaml) before the same
        # fine-tuning, and Cfd-CAM.
        assert not default.pretrain.enabled and cfg.pretrain.enabled
        assert (cfg.pretrain.epochs, cfg.pretrain.module.image_size) == (8, 64)
        assert cfg.cam.name == "cfdcam" and cfg.finetune == default.finetune
        assert {k: v for k, v in key.items() if k != "pretrain"} == {
            k: v for k, v in plain.items() if k != "pretrain"
        }
    # The U-Net self-trained on Cfd-CAM's masks and the supervised ceiling train on the same
    # data and score the same slices.
    assert "method=selftrain" in jobs[-2].overrides
    selftrain = compose_job_config(jobs[-2].overrides, jobs[-2].run_dir, settings.project_root)
    assert (selftrain.cam.name, selftrain.cam.mask) == ("cfdcam", "densecrf")  # Cfd-CAM's row's
    assert "method=supervised" in jobs[-1].overrides


def test_demo_mode_runs_every_brats_modality_on_the_demo_config(settings):
    """`cfdcam_table1 --demo`: each modality on make run's config (no recipe experiment):
    make run's budgets (up to 10 fine-tuning epochs with an early stop) and slices."""
    demo = dataclasses.replace(settings, demo=True, vgg_weights=None)
    plain = compose_job_config(["modality=t1"], settings.runs_dir, settings.project_root)
    for key, modality in (
        ("brats-t1-cfd-cam-ours", "t1"),
        ("brats-t2-flair-grad-cam-2016", "flair"),
    ):
        cfg = _config(demo, "cfdcam_table1", key)
        assert cfg.data._target_ == "src.data.demo.DemoBraTSDataModule"
        assert cfg.modality == modality and cfg.finetune.epochs == 10
        assert cfg.finetune.patience == plain.finetune.patience == 2
        assert cfg.pretrain.enabled is False and cfg.eval.limit == plain.eval.limit
        assert cfg.backbone == plain.backbone and cfg.cam.mask == "densecrf"
