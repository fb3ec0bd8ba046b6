"""The `gan` task: generate images like the user's; dcgan on trial against the fully connected mlp-gan.

The package: ``data`` (the images, the judge and the real reference), ``jobs`` (the engine job with
two optimizers, sampling), ``measure`` (the final measures), ``report`` (pictures and report.html),
``predict`` (generate and evaluate from a finished run). The measures themselves, shared with
`cyclegan`, are in tasks/common/judge.py; the guard and pixel conversions in tasks/common/adversarial.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.gan import DCGAN_SIZES, DCGANConfig, resolve_dcgan_config
from deepskeptic.runs import Run
from deepskeptic.settings import MAX_IMAGE_SIZE, Setting
from deepskeptic.tasks.base import GenerateOptions, Task
from deepskeptic.tasks.common.judge import get_judge, real_reference
from deepskeptic.tasks.gan.data import Prepared, data_shape, limit_data, load_data
from deepskeptic.tasks.gan.jobs import GanJob, flops_per_example
from deepskeptic.tasks.gan.measure import measure_run
from deepskeptic.tasks.gan.predict import GanPredictor, generate_command
from deepskeptic.tasks.gan.report import write_gan_report, write_pictures


class GanTask(Task):
    name = "gan"
    description = "generate images: dcgan against the fully connected mlp-gan"
    primary_metric = "fd"
    higher_is_better = False
    default_epochs = 5
    default_models = ("mlp-gan", "dcgan")
    renamed_settings: ClassVar[dict[str, str]] = {"fd_samples": "eval_samples"}  # the name cyclegan uses
    commands: ClassVar[frozenset[str]] = frozenset({"generate"})
    predictor_class = GanPredictor
    declared_settings = (
        # pixels per side; default the data's own (dcgan makes 8, 16, 28, 32, 64, 128)
        Setting("image_size", None, "int", "resize images to this many pixels per side", low=1, high=MAX_IMAGE_SIZE),
        # comma-separated class names to keep (default: all)
        Setting("classes", None, "str", "comma-separated class names to keep, e.g. sneaker,sandal"),
        # at most this many training images (a fixed subset; quick tries)
        Setting("limit", None, "int", "use at most this many training images", low=1),
        # images per epoch (a random draw): a grid and an FD every ~10k images, since a GAN's epochs
        # mark progress, not passes (a 2-core CPU does ~1 pass in 10 min)
        Setting("epoch_images", 10000, "int", "training images per epoch, drawn at random "
                                              "(10000; the whole set when smaller)", low=1),
        # 'ns' non-saturating (Goodfellow et al. 2014) or 'hinge' (steadier at times)
        Setting("objective", "ns", "choice", "adversarial loss (ns)", choices=("ns", "hinge")),
        Setting("d_steps", 1, "int", "discriminator steps per generator step (1)", low=1),
        # stop when D wins outright this many steps in a row (0: never stop)
        Setting("d_win_steps", 1000, "int", "stop after the discriminator wins outright "
                                            "this many steps in a row (1000; 0: never)", low=0),
        # an image run whose classifier measures; default: train one and cache it
        Setting("judge", None, "path", "image run whose classifier measures the samples (default: cached cnn)"),
        # epochs of the cached judge (cnn): ~89 % on Fashion-MNIST, under a minute on 2 cores
        Setting("judge_epochs", 5, "int", "epochs of an automatically trained judge (5)", low=1),
        # at most this many training images for the judge (minutes on 2 cores)
        Setting("judge_limit", 12000, "int", "training images of an automatically trained judge (12000)", low=1),
        # images per side for FD, precision and recall (FD is biased at small n); its old name
        # fd_samples (renamed_settings) keeps a hidden flag --fd-samples
        Setting("eval_samples", 2000, "int", "images per side for FD, precision, recall (2000)", low=1),
    )

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        full = load_data(settings)
        data = limit_data(full, settings.get("limit"))
        if len(data.x_test) < 2:
            raise UserError(f"data set {settings['data']} has {len(data.x_test)} held-out image(s); at least 2 "
                            f"are needed to measure the generated images: add images")
        self.check_fit(settings, data)  # before the judge: a wrong size or batch fails in a second
        # judge and floor from all training images: --limit changes what the GAN sees, not the yardstick
        judge = get_judge(str(settings["data"]), full, settings)
        reference = real_reference(judge, full.x_train, data.x_test, settings["eval_samples"])
        return Prepared(data, judge, reference)

    def shape_of(self, prepared: Prepared) -> dict[str, Any]:
        return data_shape(prepared.data)

    def model_config(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> Any:
        """The model's config; the data's channels and size win over [model] settings, and dcgan's
        automatic widths are resolved, so config.json records the widths used."""
        cfg = super().model_config(model, model_config, shape)
        return resolve_dcgan_config(cfg) if isinstance(cfg, DCGANConfig) else cfg


    def misfit_message(self, model: str, shape: dict[str, Any], error: ValueError) -> str:
        size = shape["image_size"]
        best = min(DCGAN_SIZES, key=lambda s: (abs(s - size), -s))
        return (f"images of {size} px do not fit model '{model}': {error}; "
                f"pass --image-size {best} (or another of those sizes)")

    def check_fit(self, settings: dict[str, Any], data) -> nn.Module:
        """The model for the data; UserError when the images do not fit it or one batch."""
        if len(data.x_train) < settings["batch_size"]:
            raise UserError(f"{settings['data']} has {len(data.x_train)} training image(s), fewer than one batch "
                            f"({settings['batch_size']}): add images or lower --batch-size")
        return self.create_model(settings["model"], settings["model_config"], data_shape(data))

    def build(self, settings, prepared: Prepared, device):
        data = prepared.data
        gan = self.check_fit(settings, data)
        flops = flops_per_example(gan, gan.latent_dim)
        gan = gan.to(device)
        if device.type == "cuda":
            gan = gan.to(memory_format=torch.channels_last)
        prepared.judge.to(device)
        info = {"model_config": dataclasses.asdict(self.model_config(settings["model"], settings["model_config"],
                                                                      data_shape(data))),
                "flops_per_example": flops,
                "data_info": {"name": data.name, "source": data.source, "classes": data.classes,
                              "channels": data.channels, "image_size": data.image_size,
                              "train": len(data.x_train), "heldout": len(data.x_test), "skipped": data.skipped},
                "judge": prepared.judge.run_path}
        return GanJob(gan, data.x_train, settings, device, prepared.judge, prepared.reference), info

    def finish(self, run: Run, job: GanJob, prepared: Prepared, settings, device) -> dict[str, Any]:
        return measure_run(job.generator, job.latent_dim, prepared, settings["seed"], device,
                           write_pictures=lambda fake: write_pictures(run, job.generator, job.latent_dim,
                                                                      fake, prepared, device))

    def load_models(self, run: Run, device: torch.device) -> dict[str, nn.Module]:
        """{"generator", "discriminator"}: the trained networks, named as the weights file names them."""
        settings = run.config["settings"]
        gan = registry.create(self.name, settings["model"], **run.config["model_config"])
        modules = {"generator": gan.generator, "discriminator": gan.discriminator}
        run.load_weights(modules)
        return {name: module.to(device).eval() for name, module in modules.items()}

    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.gan.export import graphs
        return graphs(self, run)

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        write_gan_report(run, metrics)

    def generate(self, run: Run, options: GenerateOptions) -> int:
        return generate_command(self.predictor(run), options)

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"channels": 1, "image_size": 28, "description": "28x28 grayscale images (Fashion-MNIST); --data for yours"}
        d = load_data({"data": data, "image_size": None, "classes": None})
        return {"channels": d.channels, "image_size": d.image_size,
                "description": f"{d.image_size}x{d.image_size}x{d.channels} images ({data})"}
