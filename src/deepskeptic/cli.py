"""The `deepskeptic` command line. Exit codes: 0 done, 2 the user's input is wrong, 1 a bug, 130 Ctrl-C."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deepskeptic.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see '{self.prog} --help')")


def _common_train_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the shared settings that have one (settings.COMMON_SETTINGS: each flag parsed and
    checked against its declaration), and --config."""
    from deepskeptic.settings import COMMON_SETTINGS
    for setting in COMMON_SETTINGS.values():
        if setting.help is not None:
            setting.add_flag(parser)
    parser.add_argument("--config", dest="config_file", help="TOML file of settings (flags override it)")


def build_parser() -> argparse.ArgumentParser:
    from deepskeptic.settings import COMMON_SETTINGS
    from deepskeptic.tasks import TASKS
    from deepskeptic.tasks.base import GENERATE_SETTINGS
    parser = _Parser(prog="deepskeptic", description="Deep networks next to the baselines they must beat.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("datasets", help="built-in data sets and whether this machine has them")
    p.add_argument("action", nargs="?", choices=["fetch"], help="fetch NAME: download a data set (online machines)")
    p.add_argument("name", nargs="?")

    p = sub.add_parser("models", help="registered models with parameter counts")
    p.add_argument("task", nargs="?")
    p.add_argument("--data", help="data set whose input size the parameter counts use")

    p = sub.add_parser("train", help="train one model")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run from its last checkpoint")
    tasks = p.add_subparsers(dest="task", required=False, parser_class=_Parser)
    for task in TASKS.values():
        tp = tasks.add_parser(task.name, help=task.description)
        _common_train_flags(tp)
        COMMON_SETTINGS["model"].add_flag(tp, help=f"one of: {', '.join(task.model_names())}")
        COMMON_SETTINGS["seed"].add_flag(tp, help="random seed (0)")
        task.add_arguments(tp)

    p = sub.add_parser("compare", help="every model on the same data, budget and seeds")
    tasks = p.add_subparsers(dest="task", required=True, parser_class=_Parser)
    for task in TASKS.values():
        tp = tasks.add_parser(task.name, help=task.description)
        _common_train_flags(tp)
        tp.add_argument("--models", help=f"comma-separated (default: {','.join(task.default_models)})")
        tp.add_argument("--seeds", type=int, default=3, help="seeds per model (3)")
        tp.add_argument("--jobs", type=int, default=1,
                        help="train the runs in N local processes: each gets cores/N threads, or one GPU (1)")
        tp.add_argument("--ray", metavar="ADDRESS",
                        help="train the runs as tasks on the Ray cluster at ADDRESS ('auto': this machine's, "
                             "or a local one); --out must be on storage the cluster shares")
        task.add_arguments(tp)

    p = sub.add_parser("evaluate", help="recompute a run's test metrics, on its own data or --data")
    p.add_argument("run")
    p.add_argument("--data")

    p = sub.add_parser("predict", help="use a trained run on new inputs")
    p.add_argument("run")
    p.add_argument("inputs", nargs="*")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--data", help="data to predict from (tasks that read a series or table)")
    p.add_argument("--out", help="file or folder to write predictions to")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("generate", help="generate text or images from a trained run")
    p.add_argument("run")
    for setting in GENERATE_SETTINGS.values():    # --prime, --length, --temperature, --top-k, --n, --seed
        setting.add_flag(p, default=setting.default)
    p.add_argument("--out", help="folder for generated files")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("translate", help="translate images between domains with a cyclegan run")
    p.add_argument("run")
    p.add_argument("--input", nargs="+", required=True, help="image files or folders")
    p.add_argument("--direction", choices=["a2b", "b2a"], default="a2b")
    p.add_argument("--out", help="folder for translated images")

    p = sub.add_parser("explain", help="feature maps and Grad-CAM for inputs")
    p.add_argument("run")
    p.add_argument("inputs", nargs="*")
    p.add_argument("--out", help="folder for the pictures (default RUN/explain)")
    p.add_argument("--text", help="text to explain (text tasks)")
    p.add_argument("--cells", help="LSTM units to show, comma-separated (text and forecast tasks; default: the most active)")

    p = sub.add_parser("export", help="a trained network as ONNX or torch.export, checked against PyTorch")
    p.add_argument("run")
    p.add_argument("--format", default="onnx", help="onnx (default) or torch-export")
    p.add_argument("--out", help="folder for the file(s) and their sidecar JSON (default RUN/export)")

    p = sub.add_parser("report", help="re-render report.html of a run or comparison folder")
    p.add_argument("folder")

    p = sub.add_parser("serve", help="a REST API and a web page for trained runs")
    p.add_argument("folders", nargs="*", metavar="RUN_OR_COMPARE_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $DEEPSKEPTIC_TOKEN)")
    p.add_argument("--max-batch", type=int, default=32, help="inputs per batched predictor call (32)")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="how long a request waits for others to batch with (5)")
    p.add_argument("--watch", metavar="FOLDER", help="also list the runs in FOLDER, training or finished, with learning curves")
    return parser


def _flags(args: argparse.Namespace, exclude: set[str]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in exclude and v is not None}


def cmd_datasets(args) -> int:
    from deepskeptic.data.images import fetch_fashion_mnist
    from deepskeptic.tasks import TASKS
    if args.action == "fetch":
        owners = {d["name"]: task for task in TASKS.values() for d in task.datasets() if d["name"] != "fashion-mnist"}
        if args.name in owners:
            print(f"fetched into {owners[args.name].fetch(args.name)}")
            return 0
        if args.name != "fashion-mnist":
            raise UserError(f"can only fetch {', '.join(['fashion-mnist', *owners])}, not {args.name!r}")
        print(f"fetched into {fetch_fashion_mnist()}")
        return 0
    for d in [d for task in TASKS.values() for d in task.datasets()]:
        state = f"available at {d['location']}" if d["available"] else f"missing: {d['how_to_get']}"
        print(f"{d['name']:<16} {d['task']:<9} {d['description']}\n{'':<27}{state}")
    print("any folder       image     --data PATH: one subfolder per class, or train/ and test/ with them")
    return 0


def cmd_models(args) -> int:
    from deepskeptic.models import registry
    from deepskeptic.tasks import TASKS, get_task
    tasks = [get_task(args.task)] if args.task else list(TASKS.values())
    for task in tasks:
        shape = task.input_shape(args.data)
        print(f"{task.name} (parameters for {shape['description']}):")
        for name in task.model_names():
            spec = registry.spec(task.name, name)
            try:
                params = f"{registry.count_params(task.example_model(name, shape)):,}"
            except UserError as exc:
                params = f"n/a ({exc})"
            print(f"  {name:<10} {spec.role:<9} {params:>12} params  {spec.description}")
    return 0


def cmd_train(args) -> int:
    from deepskeptic.runs import Run
    from deepskeptic.tasks import get_task
    from deepskeptic.training import resolve_settings, resume_run, train
    if args.resume:
        if args.task:
            raise UserError("--resume takes only the run folder; its settings come from its config.json")
        run = Run.open(args.resume, complete=False)
        run = resume_run(get_task(run.config["task"]), run)
    else:
        if not args.task:
            raise UserError("name a task (e.g. 'deepskeptic train image --data digits --model cnn') or --resume RUN")
        task = get_task(args.task)
        settings = resolve_settings(task, _flags(args, {"command", "task", "resume", "config_file"}), args.config_file)
        run = train(task, settings)
    from deepskeptic import distributed
    if not distributed.current().is_main:   # under torchrun: rank 0 reports the run
        return 0
    metrics = run.metrics
    task_metric = get_task(run.config["task"]).primary_metric
    print(f"{task_metric} {metrics[task_metric]:.4f} after {metrics['epochs']} epoch(s), "
          f"{metrics['train_seconds']:.1f} s of training")
    print(f"run folder: {run.path}\nreport: {run.report_path}")
    return 0


def cmd_compare(args) -> int:
    import time
    from deepskeptic.compare import run_comparison
    from deepskeptic.tasks import get_task
    task = get_task(args.task)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else list(task.models_for(args.data))
    out = Path(args.out or f"runs/compare-{task.name}-{Path(str(args.data)).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    flags = _flags(args, {"command", "task", "models", "seeds", "out", "config_file", "jobs", "ray"})
    summary = run_comparison(task, flags, args.config_file, models, args.seeds, out, jobs=args.jobs, ray=args.ray)
    metric = summary["metric"]
    for model, s in summary["models"].items():
        print(f"{model:<10} {metric} {s[f'{metric}_mean']:.4f} ± {s[f'{metric}_std']:.4f}  "
              f"{s['params']:>10,} params  {s['train_seconds_mean']:.1f} s")
    for sentence in summary["verdicts"]:
        print(sentence)
    print(f"summary: {out / 'summary.json'}\nreport: {out / 'report.html'}")
    return 0


def _task_of_run(path: str):
    from deepskeptic.runs import Run
    from deepskeptic.tasks import get_task
    run = Run.open(path)
    return get_task(run.config["task"]), run


def cmd_evaluate(args) -> int:
    task, run = _task_of_run(args.run)
    print(json.dumps(task.evaluate(run, args.data), indent=2))
    return 0


def cmd_predict(args) -> int:
    from deepskeptic.tasks.base import PredictOptions
    task, run = _task_of_run(args.run)
    return task.predict(run, PredictOptions(inputs=tuple(args.inputs), top_k=args.top_k, data=args.data,
                                            out=args.out, as_json=args.json))


def _extra(task, command: str):
    """The task's ``command`` (one of generate, translate, explain), if the task declares it."""
    from deepskeptic.tasks import TASKS
    if command not in task.commands:
        having = [t.name for t in TASKS.values() if command in t.commands]
        raise UserError(f"task '{task.name}' has no {command} command (runs of {', '.join(having)} have)")
    return getattr(task, command)


def cmd_explain(args) -> int:
    from deepskeptic.tasks.base import ExplainOptions
    task, run = _task_of_run(args.run)
    return _extra(task, "explain")(run, ExplainOptions(inputs=tuple(args.inputs), out=args.out, text=args.text,
                                                        cells=args.cells))


def cmd_generate(args) -> int:
    from deepskeptic.tasks.base import GenerateOptions
    task, run = _task_of_run(args.run)
    return _extra(task, "generate")(run, GenerateOptions(
        prime=args.prime, length=args.length, temperature=args.temperature, top_k=args.top_k, n=args.n,
        seed=args.seed, out=args.out, as_json=args.json))


def cmd_translate(args) -> int:
    from deepskeptic.tasks.base import TranslateOptions
    task, run = _task_of_run(args.run)
    return _extra(task, "translate")(run, TranslateOptions(inputs=tuple(args.input), direction=args.direction,
                                                            out=args.out))


def cmd_export(args) -> int:
    from deepskeptic.export import describe, export_run
    task, run = _task_of_run(args.run)
    sidecars = export_run(task, run, format=args.format, out=args.out)
    print(describe(sidecars))
    out = Path(args.out) if args.out else run.path / "export"
    print(f"sidecar(s): {', '.join(str(out / (name + '.json')) for name in sidecars)}")
    return 0


def cmd_report(args) -> int:
    from deepskeptic.compare import summarise, write_comparison_report
    from deepskeptic.fileio import atomic_write_json, read_json
    from deepskeptic.tasks import get_task
    folder = Path(args.folder)
    if (folder / "summary.json").is_file():
        summary = read_json(folder / "summary.json")
        task = get_task(summary["task"])
        # Recomputed from the runs' metrics.json, so the verdicts follow the current rules.
        summary = summarise(task, folder, list(summary["models"]), summary["seeds"])
        atomic_write_json(folder / "summary.json", summary)
        write_comparison_report(task, folder, summary)
        print(f"report: {folder / 'report.html'}")
        return 0
    task, run = _task_of_run(args.folder)
    task.write_report(run)
    print(f"report: {run.report_path}")
    return 0


def cmd_serve(args) -> int:
    from deepskeptic.serve import serve
    return serve(args.folders, host=args.host, port=args.port, token=args.token, max_batch=args.max_batch,
                 max_delay_ms=args.max_delay_ms, watch=args.watch)


COMMANDS = {"datasets": cmd_datasets, "models": cmd_models, "train": cmd_train, "compare": cmd_compare,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "explain": cmd_explain, "generate": cmd_generate, "translate": cmd_translate, "export": cmd_export,
            "report": cmd_report, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    import os

    from deepskeptic.engine import Interrupted
    from deepskeptic.errors import os_error_message, printable

    def say(line: str) -> None:       # one line: a file name cannot forge a second one
        rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else "0"
        print(printable(line if rank == "0" else f"rank {rank}: {line}"), file=sys.stderr)

    try:
        from deepskeptic import schema
        from deepskeptic.tasks import TASKS
        schema.use_tasks(TASKS)       # run folders read back are checked against the tasks' declarations
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as exc:
        say(f"error: {exc}")
        return 2
    except Interrupted as exc:
        say(f"interrupted: checkpoint saved; continue with 'deepskeptic train --resume {exc}'")
        return 130
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:
        # stdout was piped into a program that stopped reading (`| head`): stop quietly, and point
        # stdout at /dev/null so that flushing it at exit does not complain again.
        try:
            import os
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141                    # 128 + SIGPIPE, what a shell reports for a program stopped so
    except OSError as exc:            # no space left, permission denied, ...: the file and why
        say(f"error: {os_error_message(exc)}")
        return 2
    except MemoryError:
        say("error: out of memory: the input or the settings ask for more memory than this machine has "
            "(a smaller --batch-size, --image-size or data set helps)")
        return 2
    finally:
        if "deepskeptic.distributed" in sys.modules:   # a torchrun process group: leave it cleanly
            sys.modules["deepskeptic.distributed"].shutdown()


if __name__ == "__main__":
    sys.exit(main())
