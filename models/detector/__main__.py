"""python -m models.detector {cache,train,export,evaluate}: build the QR detector's artefacts.

`train` runs the whole chain: cache -> training (wall-clock budget) -> export -> evaluation,
and writes `models/qr-det-{model}.metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Threads wait for each other at every operator: if they spin while another process holds
# a core, each barrier costs a scheduler slice and PyTorch on two cores becomes 30x slower.
# Must be set before torch loads its OpenMP runtime, hence the imports inside functions.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


MODELS = ("small", "medium")  # net.CONFIGS' keys, spelled out so --help needs no torch


def update_metrics(name: str, **sections: object) -> Path:
    """Merge sections into the model's metrics JSON, keeping what other steps wrote."""
    import onnxruntime
    import torch

    from models.detector.export import artefact_paths
    from worker.engine.detector.net import CONFIGS, build, parameter_count

    path = artefact_paths(name)["metrics"]
    metrics = json.loads(path.read_text()) if path.exists() else {}
    config = CONFIGS[name]
    metrics.update(
        model=name,
        input_size=config.input_size,
        widths=list(config.widths),
        depths=list(config.depths),
        neck=config.neck,
        parameters=parameter_count(build(name)),
        environment={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
        },
    )
    metrics.update(sections)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _command() -> str:
    return "python -m models.detector " + shlex.join(sys.argv[1:])


def cmd_cache(args: argparse.Namespace) -> None:
    from models.detector import data

    print(data.build_cache(workers=args.workers, force=args.force))


def cmd_train(args: argparse.Namespace) -> None:
    from models.detector.export import artefact_paths
    from models.detector.train import TrainConfig, train

    init = str(args.init) if args.init else None
    config = TrainConfig(
        model=args.model,
        seed=args.seed,
        minutes=args.minutes,
        steps=args.steps,
        lr=args.lr,
        init=init,
        tag=args.tag,
    )
    best = train(config)
    summary = json.loads((best.parent / "summary.json").read_text())
    print(f"trained {summary['steps']} steps in {summary['wall_s']} s; best {summary['best']}")
    stage = {
        "command": _command(),
        "seed": args.seed,
        "minutes_budget": args.minutes,
        "peak_lr": args.lr,
        "init": init,
        "steps": summary["steps"],
        "wall_s": summary["wall_s"],
        "checkpoint_choice": "EMA weights with the best recall on the dev split "
        "(1/16 of qr-photos held out from training); qr-photos-val not used",
        "dev_best": {
            "recall": summary["best"][0],
            "precision": summary["best"][1],
            "step": summary["best"][2],
        },
    }
    stages = [stage]
    if init is not None:
        # A continued run: keep the record of the stages that produced its starting point.
        metrics_path = artefact_paths(args.model)["metrics"]
        previous = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        earlier = previous.get("training", {})
        stages = [*earlier.get("stages", [earlier] if earlier else []), stage]
    update_metrics(
        args.model,
        training={
            "stages": stages,
            "total_steps": sum(s["steps"] for s in stages),
            "total_wall_s": round(sum(s["wall_s"] for s in stages), 1),
        },
    )
    _export_and_evaluate(args.model, best)


def _export_and_evaluate(name: str, checkpoint: Path) -> None:
    from models.detector.export import export

    parity = export(name, checkpoint)
    print("parity", json.dumps(parity))
    source = checkpoint.resolve()
    shown = source.relative_to(Path.cwd()) if source.is_relative_to(Path.cwd()) else source
    update_metrics(name, parity=parity, exported_from=str(shown))
    cmd_evaluate(argparse.Namespace(model=name, torch=False))


def cmd_export(args: argparse.Namespace) -> None:
    from models.detector.train import CHECKPOINTS

    checkpoint = args.checkpoint or CHECKPOINTS / args.model / "best.pt"
    _export_and_evaluate(args.model, Path(checkpoint))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from models.detector.evaluate import evaluate_model, torch_runner
    from models.detector.export import artefact_paths, load_model
    from worker.engine.detector.net import CONFIGS

    paths = artefact_paths(args.model)
    size = CONFIGS[args.model].input_size
    runner = torch_runner(load_model(args.model, paths["pt"])) if args.torch else None
    start = time.monotonic()
    metrics = evaluate_model(paths["onnx"], size, runner)
    metrics["evaluated_with"] = "pytorch" if args.torch else "onnxruntime"
    metrics["pt_bytes"] = paths["pt"].stat().st_size
    print(json.dumps(metrics, indent=2))
    print(f"evaluated in {time.monotonic() - start:.1f} s")
    if not args.torch:
        update_metrics(args.model, evaluation=metrics)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.detector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache", help="decode the training and test data once")
    cache.add_argument("--workers", type=int, default=2)
    cache.add_argument("--force", action="store_true")
    cache.set_defaults(func=cmd_cache)
    models = MODELS
    trainer = sub.add_parser("train", help="train, export and evaluate one model")
    trainer.add_argument("--model", choices=models, required=True)
    trainer.add_argument("--seed", type=int, default=0)
    trainer.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget")
    trainer.add_argument(
        "--steps", type=int, default=None, help="fixed step count (reproducible schedule)"
    )
    trainer.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    trainer.add_argument(
        "--init", type=Path, default=None, help="continue from these weights (a new cosine cycle)"
    )
    trainer.add_argument(
        "--tag", default="", help="checkpoint folder suffix, so a continued run keeps its start"
    )
    trainer.set_defaults(func=cmd_train)
    exporter = sub.add_parser("export", help="export a checkpoint to .pt/.onnx and evaluate")
    exporter.add_argument("--model", choices=models, required=True)
    exporter.add_argument("--checkpoint", type=Path, default=None)
    exporter.set_defaults(func=cmd_export)
    evaluator = sub.add_parser("evaluate", help="evaluate the exported model")
    evaluator.add_argument("--model", choices=models, required=True)
    evaluator.add_argument(
        "--torch", action="store_true", help="run the .pt with PyTorch (does not write metrics)"
    )
    evaluator.set_defaults(func=cmd_evaluate)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
