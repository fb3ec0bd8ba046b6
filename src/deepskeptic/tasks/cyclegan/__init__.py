"""The `cyclegan` task: translate images between two domains without pairs; cyclegan against the
identity mapping.

The package: ``data`` (the two domains, the judge and the held-out references), ``jobs`` (the
engine jobs), ``measure`` (target share, FD and cycle error, per epoch and after training),
``report`` (report.html), ``predict`` (translate and evaluate from a finished run). The judge and the
measures shared with `gan` are in tasks/common/judge.py; the guard, the image pool and the pixel
conversions in tasks/common/adversarial.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from deepskeptic.data.images import image_datasets
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.gan import CycleGANConfig, resolve_cyclegan_config
from deepskeptic.runs import Run
from deepskeptic.settings import MAX_IMAGE_SIZE, Setting, common
from deepskeptic.tasks.base import Task, TranslateOptions
from deepskeptic.tasks.common.judge import get_judge, real_reference
from deepskeptic.tasks.cyclegan.data import (DEFAULT_PAIR, PairData, Prepared, judge_data, limit_pair, load_pair,
                                            pair_shape)
from deepskeptic.tasks.cyclegan.jobs import CycleJob, IdentityJob, flops_per_pair
from deepskeptic.tasks.cyclegan.measure import epoch_evaluator, measure, save_triplets
from deepskeptic.tasks.cyclegan.predict import CycleGanPredictor, translate_command
from deepskeptic.tasks.cyclegan.report import write_cyclegan_report


class CycleGanTask(Task):
    name = "cyclegan"
    description = "translate images between two domains without pairs: cyclegan against the identity"
    primary_metric = "target_share"
    higher_is_better = True
    default_epochs = 5
    default_models = ("identity", "cyclegan")
    commands: ClassVar[frozenset[str]] = frozenset({"translate"})
    predictor_class = CycleGanPredictor
    declared_settings = (
        common("data", default=DEFAULT_PAIR),   # a built-in pair SET:CLASS~CLASS, or DIR_A~DIR_B
        # folder of domain A images (with data_b: overrides data)
        Setting("data_a", None, "path", "folder of domain A images (any sizes)"),
        Setting("data_b", None, "path", "folder of domain B images"),
        # pixels per side (multiple of 4); default the data's own, folders <= 256
        Setting("image_size", None, "int", "pixels per side, a multiple of 4", low=1, high=MAX_IMAGE_SIZE),
        # at most this many training images per domain (a fixed subset)
        Setting("limit", None, "int", "at most this many training images per domain", low=1),
        # lambda of the cycle-consistency L1 loss (the paper)
        Setting("cycle_weight", 10.0, "float", "lambda of the cycle loss (10)", low=0),
        # identity L1 loss weight in units of lambda; None: 0.5 (the paper) for colour images, where
        # it exists to keep colours (Zhu et al. 2017, sec. 5.2), 0 for grayscale, where there is no
        # colour to keep and it only holds the generators near doing nothing: on sneaker~ankle-boot
        # it kept half of the boots boots (BENCHMARKS.md)
        Setting("identity_weight", None, "float", "identity loss weight in units of lambda "
                                                  "(default 0.5 for colour images, 0 for grayscale)", low=0),
        # stop when both discriminators win outright this many steps in a row (0: never)
        Setting("d_win_steps", 1000, "int",
                "stop after this many steps in a row that the discriminators win outright (1000; 0: never)", low=0),
        # generated images kept per discriminator (the paper: 50; 0: no pool)
        Setting("pool_size", 50, "int", "generated images kept per discriminator (50)", low=0),
        # enlarge by 1/8 and random-crop back (the paper's 286 -> 256)
        Setting("jitter", True, "bool", "resize-and-crop jitter (on)"),
        Setting("flip", True, "bool", "random flips (on)"),          # random horizontal flips
        # an image run telling A from B; default: train a cnn and cache it
        Setting("judge", None, "path", "image run telling domain A from B (default: cached cnn)"),
        Setting("judge_epochs", 3, "int", "epochs of an automatically trained judge (3)", low=1),
        # at most this many training images for the judge (minutes on 2 cores)
        Setting("judge_limit", 12000, "int", "training images of an automatically trained judge", low=1),
        # held-out images per domain for the final measures (<= 200 per epoch)
        Setting("eval_samples", 500, "int", "held-out images per domain for measuring (500)", low=1),
    )

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        full = load_pair(settings)
        pair = limit_pair(full, settings.get("limit"))
        self.check_fit(settings, pair)  # before the judge: a wrong size or batch fails in a second
        # judge and floors from all training images: --limit changes what the GAN sees, not the yardstick
        judge = get_judge(pair.source, judge_data(full), settings)
        for name in pair.names:
            if name not in judge.classes:
                raise UserError(f"judge {judge.run_path} knows classes {', '.join(judge.classes)}, not domain "
                                f"'{name}': pass a judge trained on the two domains (or leave --judge out)")
        n = settings["eval_samples"]
        return Prepared(pair, judge, real_reference(judge, full.a_train, pair.a_test, n),
                        real_reference(judge, full.b_train, pair.b_test, n))

    def shape_of(self, prepared: Prepared) -> dict[str, Any]:
        return pair_shape(prepared.pair)

    def model_config(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> Any:
        """The model's config; the images' channels and size win over [model] settings, and
        cyclegan's automatic sizes are resolved, so config.json records the sizes used."""
        cfg = super().model_config(model, model_config, shape)
        return resolve_cyclegan_config(cfg) if isinstance(cfg, CycleGANConfig) else cfg


    def misfit_message(self, model: str, shape: dict[str, Any], error: ValueError) -> str:
        size = shape["image_size"]
        return f"images of {size} px do not fit model '{model}': {error}; pass --image-size {max(8, size // 4 * 4)}"

    def check_fit(self, settings: dict[str, Any], pair: PairData) -> nn.Module:
        """The model for the pair; UserError when the images do not fit it or a domain has less than a batch."""
        model = self.create_model(settings["model"], settings["model_config"], pair_shape(pair))
        trained = not registry.spec(self.name, settings["model"]).one_step
        for name, n in (("A", len(pair.a_train)), ("B", len(pair.b_train))):
            if trained and n < settings["batch_size"]:
                raise UserError(f"domain {name} has {n} training image(s), fewer than one batch "
                                f"({settings['batch_size']}): add images or lower --batch-size")
        return model

    def build(self, settings, prepared: Prepared, device):
        pair = prepared.pair
        model = self.check_fit(settings, pair)
        if settings["identity_weight"] is None:   # resolved here, so config.json records the value used
            settings["identity_weight"] = 0.5 if pair.channels == 3 else 0.0
        info = {"model_config": dataclasses.asdict(self.model_config(settings["model"], settings["model_config"],
                                                                      pair_shape(pair))),
                "data_info": {"names": list(pair.names), "source": pair.source, "channels": pair.channels,
                              "image_size": pair.image_size, "train_a": len(pair.a_train), "train_b": len(pair.b_train),
                              "heldout_a": len(pair.a_test), "heldout_b": len(pair.b_test)},
                "judge": prepared.judge.run_path}
        prepared.judge.to(device)
        if registry.spec(self.name, settings["model"]).one_step:   # nothing to train: one empty pass
            info["flops_per_example"] = 0
            return IdentityJob(model), info
        info["flops_per_example"] = flops_per_pair(model, pair.channels, pair.image_size)
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        job = CycleJob(model, pair.a_train, pair.b_train, settings, device, epoch_evaluator(prepared, device))
        return job, info

    def finish(self, run: Run, job, prepared: Prepared, settings, device) -> dict[str, Any]:
        metrics = measure(job.g_ab, job.g_ba, prepared, settings["eval_samples"], device)
        save_triplets(run.path / "triplets.png", job.g_ab, job.g_ba, prepared.pair, device)
        metrics["judge_test_accuracy"] = prepared.judge.test_accuracy
        metrics["judge"] = prepared.judge.run_path
        return metrics

    def load_models(self, run: Run, device: torch.device) -> dict[str, nn.Module]:
        """{"g_ab", "g_ba", "d_a", "d_b"} with their trained weights; the identity's {"g_ab", "g_ba"}
        (the input unchanged, nothing saved)."""
        settings = run.config["settings"]
        model = registry.create(self.name, settings["model"], **run.config["model_config"])
        if registry.spec(self.name, settings["model"]).one_step:
            modules = {"g_ab": model.g_ab, "g_ba": model.g_ba}
        else:
            modules = {"g_ab": model.g_ab, "g_ba": model.g_ba, "d_a": model.d_a, "d_b": model.d_b}
            run.load_weights(modules)
        return {name: module.to(device).eval() for name, module in modules.items()}

    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.cyclegan.export import graphs
        return graphs(self, run)

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        write_cyclegan_report(run, metrics)

    def translate(self, run: Run, options: TranslateOptions) -> int:
        return translate_command(self.predictor(run), options)

    def datasets(self) -> list[dict[str, Any]]:
        fm = next(d for d in image_datasets() if d["name"] == "fashion-mnist")
        return [{**fm, "name": DEFAULT_PAIR, "task": "cyclegan",
                 "description": "Fashion-MNIST sneakers (A) and ankle boots (B); any two classes: fashion:X~Y, digits:X~Y"}]

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"channels": 3, "image_size": 256, "description": "256x256 RGB images (the paper's size)"}
        pair = load_pair({"data": data, "image_size": None, "limit": None})
        return {"channels": pair.channels, "image_size": pair.image_size,
                "description": f"{pair.image_size}x{pair.image_size}x{pair.channels} images ({data})"}

