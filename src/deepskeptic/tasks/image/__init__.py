"""The `image` task: classify images; cnn and alexnet on trial against mlp and logreg."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from deepskeptic import recipes
from deepskeptic.data.images import image_datasets
from deepskeptic.errors import UserError
from deepskeptic.models.image import AlexNetConfig, alexnet_variant
from deepskeptic.runs import Run
from deepskeptic.settings import MAX_IMAGE_SIZE, Setting
from deepskeptic.tasks.base import ExplainOptions, Task
from deepskeptic.tasks.common.classification import classification_metrics
from deepskeptic.tasks.common.flops import forward_flops
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.image import data as image_data
from deepskeptic.tasks.image.data import Prepared
from deepskeptic.tasks.image.explain import explain_images
from deepskeptic.tasks.image.jobs import ImageJob, predict_logits
from deepskeptic.tasks.image.predict import ImagePredictor
from deepskeptic.tasks.image.report import write_image_report


class ImageTask(Task):
    name = "image"
    description = "recognise images: cnn and alexnet against mlp and logreg"
    primary_metric = "test_accuracy"
    higher_is_better = True
    default_epochs = 10
    default_models = ("logreg", "mlp", "cnn", "alexnet")
    commands = frozenset({"explain"})
    predictor_class = ImagePredictor
    declared_settings = (
        # pixels per side; default: the data's own size
        Setting("image_size", None, "int", "resize images to this many pixels per side", low=1, high=MAX_IMAGE_SIZE),
        # fraction of the training images held out for validation
        Setting("val_split", 0.1, "float", "fraction of training images for validation (0.1)",
                low=0, high=1, high_open=True),
        # use at most this many training images (quick tries)
        Setting("limit", None, "int", "use at most this many training images", low=1),
        # random shifts of up to size/14 px; the model's train_defaults set it
        Setting("augment", False, "bool", "random shifts during training (default: on for alexnet, off for the others)"),
        # random horizontal flips: only for data where mirror images are the same class
        Setting("flip", False, "bool", "random horizontal flips during training (default: off)"),
        # softens one-hot targets; helps short budgets generalise
        Setting("label_smoothing", 0.1, "float", "label smoothing (0.1)", low=0, high=1, high_open=True),
    )

    # --- training a run ---
    def prepare(self, settings: dict[str, Any]) -> Prepared:
        return image_data.prepare(settings)

    def shape_of(self, prepared: Prepared) -> dict[str, Any]:
        return image_data.shape(prepared.data)

    def model_config(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> Any:
        """The model's config: its [model] settings, the data's shape (which wins) and, for
        alexnet, the variant its image size chooses (recorded in config.json)."""
        cfg = super().model_config(model, model_config, {
            "in_channels": shape["channels"], "image_size": shape["image_size"], "num_classes": shape["num_classes"]})
        if isinstance(cfg, AlexNetConfig):
            cfg = dataclasses.replace(cfg, variant=alexnet_variant(cfg))
        return cfg


    def misfit_message(self, model: str, shape: dict[str, Any], error: ValueError) -> str:
        return (f"images of {shape['image_size']} px do not fit model '{model}': {error}; "
                f"pass a larger --image-size or choose another --model")

    def build(self, settings, prepared: Prepared, device):
        data = prepared.data
        shape = self.shape_of(prepared)
        # Small data sets still need enough steps per epoch: at most 1/16 of the images per batch.
        settings["batch_size"] = min(settings["batch_size"], max(16, len(data.x_train) // 16))

        def make_job(s: dict[str, Any]) -> ImageJob:   # the recipe rule's probes train these
            probe = self.create_model(s["model"], s["model_config"], shape).to(device)
            return ImageJob(probe.to(memory_format=torch.channels_last) if device.type == "cuda" else probe,
                            prepared, s, device)

        # widths or layout sized to the budget, the learning rate checked: before the model exists
        recipe = recipes.decide(self, settings, make_job, device,
                                data_key=[len(data.x_train), data.channels, data.image_size])
        model = self.create_model(settings["model"], settings["model_config"], shape)
        flops = forward_flops(model, torch.zeros(1, data.channels, data.image_size, data.image_size))
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        info = {"model_config": dataclasses.asdict(self.model_config(settings["model"], settings["model_config"], shape)),
                "flops_per_example": flops,
                "data_info": {"name": data.name, "source": data.source, "classes": data.classes,
                              "channels": data.channels, "image_size": data.image_size,
                              "mean": prepared.mean, "std": prepared.std, "train": len(data.x_train),
                              "val": len(data.x_val), "test": len(data.x_test), "skipped": data.skipped},
                "recipe": recipe}
        return ImageJob(model, prepared, settings, device), info

    def finish(self, run, job: ImageJob, prepared: Prepared, settings, device):
        logits = predict_logits(job.model, prepared.data.x_test, job.mean, job.std, device)
        return prefixed(classification_metrics(logits, prepared.data.y_test, prepared.data.classes), "test")

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        write_image_report(self, run, prepared, metrics)

    # --- the registry at the task's example input ---
    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"channels": 1, "image_size": 28, "num_classes": 10,
                    "description": "28x28 grayscale images, 10 classes (Fashion-MNIST); --data for yours"}
        d = self.prepare({"data": data, "image_size": None, "val_split": 0.1, "limit": None}).data
        return {**image_data.shape(d),
                "description": f"{d.image_size}x{d.image_size}x{d.channels} images, {d.num_classes} classes ({data})"}

    # --- using a finished run (load_models: the default, one "model") ---
    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.image.export import graphs
        return graphs(self, run)

    def explain(self, run: Run, options: ExplainOptions) -> int:
        if not options.inputs:
            raise UserError("name at least one image to explain")
        return explain_images(self.predictor(run), options)

    # --- data sets ---
    def datasets(self) -> list[dict[str, Any]]:
        return image_datasets()
