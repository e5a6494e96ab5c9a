"""visionzoo command line: list, train, evaluate and export the source projects' models.

    visionzoo list
    visionzoo train bloodcell_mobilenetv3 --data-dir ../shared/data/blood_pbc --weights none
    visionzoo train bloodcell_mobilenetv3 --help          (the recipe's defaults)
    visionzoo train --resume runs/bloodcell_mobilenetv3-20261122-101500
    visionzoo evaluate runs/bloodcell_mobilenetv3-20261122-101500 --split test
    visionzoo export runs/bloodcell_mobilenetv3-20261122-101500
    visionzoo ensemble RUN_A RUN_B                        (average models trained on one split)
    visionzoo ensemble exported_models/mura_multitask_resnet/1 new_members/mura_multitask_resnet/1
                                                          (grow a shipped ONNX-only ensemble)
    visionzoo predict bloodcell cell.jpg --top-k 3        (in-process inference, no TensorFlow)

Also available as `python -m visionzoo.training`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import recipe as recipe_module

EPILOG = """Settings resolve in this order: the recipe (the source project's values) -> --config FILE.toml
-> --set KEY=VALUE -> explicit flags. Examples of --set:
  --set optimizer.learning_rate=3e-4   --set model_options.backbone_bn_momentum=0.9
  --set class_weight=none              --set ignore_background=true
"""


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, one per class (e.g. 1,1,1,0.5,0.7), got {text!r}")


def _parser(train_epilog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionzoo", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="show every model, grouped by source project")
    listing.add_argument("--served", action="store_true", help="only the families the BentoML service serves")
    listing.add_argument("--formats", action="store_true", help="list the data formats the loaders read instead")

    train = commands.add_parser("train", help="train a model on a dataset folder or file", epilog=EPILOG + train_epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="visionzoo train [-h] MODEL --data-dir DATA_DIR [options]\n"
                                      "       visionzoo train --resume RUN")
    train.add_argument("model", nargs="?", help="model name from `visionzoo list` (`visionzoo train MODEL --help` "
                                                "shows its recipe's defaults)")
    train.add_argument("--data-dir", help="dataset folder or .npz file, in any format the model reads (required unless --resume)")
    train.add_argument("--resume", type=Path, metavar="RUN",
                       help="continue an unfinished (killed) run from its last completed epoch, with its recorded "
                            "config and optimizer state")
    train.add_argument("--finish", type=Path, metavar="RUN",
                       help="end an unfinished (killed) run where it stands: evaluate its best checkpoint so far, record "
                            "the epochs it completed of those planned, and mark it finished (exportable)")
    train.add_argument("--data-format", help="force a data format instead of detecting it (see `visionzoo list --formats`)")
    train.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner); default: the recipe's")
    train.add_argument("--batch-size", type=int, help="global batch size; default: the recipe's")
    train.add_argument("--seed", type=int, help="seed for shuffles, augmentation and initialisation, and for the "
                                                "train/val/test split unless --set split_seed=N (default 42)")
    train.add_argument("--weights", help="starting weights: for models with an ImageNet backbone imagenet, none, or a local "
                                         ".h5 file; for mura_multitask_resnet a run folder, .keras or .h5 file whose layers "
                                         "it shares by name (e.g. an xray_trunk_cifar10 run: its body pretrained on CIFAR-10)")
    train.add_argument("--init-from", metavar="RUN_OR_EXPORT",
                       help="start from a trained model's weights instead of the recipe's initialisation: a finished run "
                            "folder, or an export version that ships its SavedModel (e.g. exported_models/mars_dual_unet/6); "
                            "same recipe and classes. Fine-tune on new data, or train longer at a lower learning rate")
    train.add_argument("--smoke", action="store_true", help="a few batches on a few dozen examples, to check the setup")
    train.add_argument("--out", help="parent folder for the run folder (default: runs)")
    train.add_argument("--config", type=Path, help="TOML file of setting overrides (see visionzoo/training/configs/)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting (repeatable)")
    train.add_argument("--strategy", choices=["auto", "one_device", "mirrored", "multiworker"],
                       help="distribution: mirrored = all local GPUs; multiworker = MultiWorkerMirroredStrategy from TF_CONFIG")
    train.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                       help="numeric policy; mixed_float16 applies dynamic loss scaling automatically")
    train.add_argument("--jit", action="store_true", help="compile the train step with XLA (GPU runs)")
    train.add_argument("--skip-bad", action="store_true", help="skip and count unreadable images instead of stopping")

    evaluate = commands.add_parser("evaluate", help="re-score a run's best checkpoint and redraw its plots")
    evaluate.add_argument("run", type=Path, help="run folder printed by `visionzoo train`")
    evaluate.add_argument("--split", choices=["val", "test", "all"], default="all", help="which split to score (default all)")
    evaluate.add_argument("--data-dir", help="where the run's dataset is now, if it moved")

    export = commands.add_parser("export", help="write SavedModel + ONNX + metadata.json with a parity check")
    export.add_argument("run", type=Path, help="run folder printed by `visionzoo train`")
    export.add_argument("--out", type=Path, default=Path("exported_models"), help="export root (default exported_models)")
    export.add_argument("--name", help="name under the export root (default: the model name)")
    export.add_argument("--savedmodel", choices=["always", "auto", "never"], default="always",
                        help="ship the SavedModel (saved_model.pb + variables/ in the version folder) always (default), only when small (auto, <= 20 MiB), or never; "
                             "it is written and parity-checked either way")
    export.add_argument("--force", action="store_true",
                        help="export even a smoke or unfinished run, or a model whose outputs are (nearly) constant on real inputs")
    export.add_argument("--tile-overlap", type=float,
                        help="tiled models: how the served version cuts frames, overlap of consecutive tiles 0 to <1 "
                             "(0.5: a tile over every seam, outputs blended); default: as trained (0)")
    export.add_argument("--decision-weights", type=_weights,
                        help="segmentation: comma-separated multipliers, one per class, on the probabilities before the "
                             "served arg-max (a prior correction chosen on validation; benchmarks/mars_decision.py finds them); "
                             "default: none")

    ensemble = commands.add_parser(
        "ensemble", help="average two or more models of one recipe trained on one split into one model (a run folder; "
                         "merging ONNX-only export versions publishes the next version)",
        description="Build the ensemble of trained members (run folders or export versions that ship a SavedModel): "
                    "each output is the mean of the members' outputs. It is evaluated on val and test like a finished "
                    "run and written as a run folder that `visionzoo export` ships like any other (Grad-CAM included). "
                    "Members must share the split: train another member with a new --seed and --set split_seed=N. "
                    "To grow a shipped ensemble (export versions ship ONNX only), export the new members and name "
                    "version folders only: their ONNX graphs are merged, each weighted by the networks it averages, "
                    "checked against the members averaged in NumPy, scored on val and test, and published as the next "
                    "version beside the first member (no `visionzoo export` step; --out is not used).",
        epilog="examples:\n  visionzoo train bloodcell_mobilenetv3 --config visionzoo/training/configs/bloodcell_scratch.toml \\\n"
               "      --data-dir $VISIONZOO_DATA/blood_pbc --seed 7 --set split_seed=42\n"
               "  visionzoo ensemble runs/bloodcell_mobilenetv3-20261122-023313 runs/bloodcell_mobilenetv3-20261203-055931\n"
               "  visionzoo export runs/bloodcell_mobilenetv3-ensemble-<stamp>\n\n"
               "  visionzoo export runs/mura_multitask_resnet-<stamp> --out new_members      # a new member\n"
               "  visionzoo ensemble exported_models/mura_multitask_resnet/N new_members/mura_multitask_resnet/1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ensemble.add_argument("members", nargs="+", type=Path, metavar="MEMBER",
                          help="a run folder or an export version folder (two or more)")
    ensemble.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of the ensemble's run folder (default: runs)")
    ensemble.add_argument("--data-dir", help="where the members' dataset is now, if it moved")

    quantize = commands.add_parser(
        "quantize", help="write an INT8 variant of an export, calibrated on real training images, scored on the test split",
        description="Static INT8 quantization (ONNX Runtime, QDQ) of an exported version: calibrated on training images "
                    "of the export's own dataset, scored against FP32 on its test split, written beside model.onnx and "
                    "recorded in metadata.json (serve it with VISIONZOO_<MODEL>_PRECISION=int8).")
    quantize.add_argument("export", type=Path, help="a version folder, e.g. exported_models/bloodcell_mobilenetv3/4")
    quantize.add_argument("--data-dir", help="where the export's dataset is now, if not where it was trained")
    quantize.add_argument("--calibration-images", type=int, default=256, help="training images to calibrate on (default 256)")

    revise = commands.add_parser(
        "revise", help="publish a new version of an export from its own weights: a Grad-CAM output, mirror averaging, or new serving settings",
        description="Without retraining: --explain rebuilds the model from the version's SavedModel weights and re-exports "
                    "it with the recipe's Grad-CAM output `cam` (parity-checked like any export; needs the training data); "
                    "--mirror-average wraps the version's ONNX graph so each answer is the mean over the image and its "
                    "left-right mirror (checked against the source graph, metrics re-measured; needs the training data); "
                    "--tile-overlap / --learnable-classes / --decision-weights keep the graph and change how serving cuts "
                    "frames and how its arg-max picks classes (golden outputs re-derived). The source version stays.",
        epilog="examples (N: a version folder that exists; each revision becomes version N+1 or later):\n"
               "  visionzoo revise exported_models/bloodcell_mobilenetv3/N --explain --data-dir ../shared/data/blood_pbc\n"
               "  visionzoo revise exported_models/bloodcell_mobilenetv3/N --mirror-average --data-dir ../shared/data/blood_pbc\n"
               "  visionzoo revise exported_models/mars_dual_unet/N --tile-overlap 0.5 --learnable-classes 1,2,3,4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    revise.add_argument("export", type=Path, help="a version folder, e.g. exported_models/mars_dual_unet/1")
    revise.add_argument("--explain", action="store_true", help="add the recipe's Grad-CAM output (Recipe.explain)")
    revise.add_argument("--mirror-average", action="store_true",
                        help="average every answer over the image and its left-right mirror inside the ONNX graph "
                             "(test-time augmentation; two forward passes per image; metrics re-measured, needs the data)")
    revise.add_argument("--tile-overlap", type=float, help="tiled models: overlap of consecutive tiles, 0 to <1 (0.5: a tile over every seam)")
    revise.add_argument("--learnable-classes", type=lambda text: [int(k) for k in text.split(",")],
                        help="comma-separated class indices the served arg-max may pick (e.g. 1,2,3,4 leaves out an ignored label 0)")
    revise.add_argument("--decision-weights", type=_weights,
                        help="segmentation: comma-separated multipliers, one per class, on the probabilities before the "
                             "arg-max (a prior correction chosen on validation, e.g. 1,1,1,0.5,0.7; "
                             "benchmarks/mars_decision.py finds them)")
    revise.add_argument("--data-dir", help="--explain, --mirror-average: where the export's dataset is now, if not where it was trained")

    predict = commands.add_parser(
        "predict", help="run a served model on image files in this process (no server, no TensorFlow)",
        description="Answer image files with an exported model through the service's own pipeline (visionzoo.load): "
                    "one line per image, or the JSON body the BentoML endpoint answers (--json).",
        epilog="examples:\n  visionzoo predict bloodcell cell1.jpg cell2.jpg --top-k 3\n"
               "  visionzoo predict mura view1.png view2.png --study\n  visionzoo predict mars frame.jpg --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("model", help="a served name (visionzoo/serving/models.yaml): bloodcell, mura, mars")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (PNG, JPEG, ... or .npy)")
    predict.add_argument("--top-k", type=int, help="classification: how many labels to list per image (default 3)")
    predict.add_argument("--study", action="store_true", help="multitask (mura): one answer for all images as views of one study")
    predict.add_argument("--json", action="store_true", help="print the full JSON answer instead of one line per image")
    predict.add_argument("--explain", type=Path, metavar="FOLDER",
                         help="write each image's Grad-CAM heatmap (where the model looked) to FOLDER/<image>.heatmap.png "
                              "(classifiers exported with a `cam` output: bloodcell, mura; a segmentation map is its own explanation)")
    predict.add_argument("--models-dir", type=Path, help="exported models folder (default VISIONZOO_MODELS_DIR or exported_models/)")
    predict.add_argument("--version", dest="model_version", help="exported version (default the newest)")
    predict.add_argument("--engine", choices=["auto", "onnxruntime", "openvino"],
                         help="inference engine (default VISIONZOO_ENGINE, else onnxruntime: it starts in about half "
                              "OpenVINO's time, which a call of a few files does not win back; auto picks the faster "
                              "for throughput, as a server does, and pays off past a few hundred images)")
    predict.add_argument("--precision", choices=["fp32", "int8", "fp16"], help="model precision (default the manifest's)")

    reproduce = commands.add_parser("reproduce", help="train recipes on real data and tabulate ours vs the sources' results")
    reproduce.add_argument("--models", nargs="+", metavar="MODEL",
                           help="models to reproduce (default: the CPU-affordable set; see visionzoo/training/reproduce.py)")
    reproduce.add_argument("--data-dir", help="folder holding mnist/, fashion_mnist/, cifar10_jpg/ ... (or one dataset folder)")
    reproduce.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of the run folders (default: runs)")
    reproduce.add_argument("--report", type=Path, default=Path("benchmarks/REPRODUCTION.md"), help="the Markdown table to write")
    reproduce.add_argument("--report-only", action="store_true", help="only rebuild the table from existing run folders")
    reproduce.add_argument("--smoke", action="store_true", help="a few batches per model, to check the setup")
    reproduce.add_argument("--full-schedule", action="store_true",
                           help="the source's epochs and data for models whose row runs a shorter, CPU-sized schedule")
    reproduce.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting for every model")
    return parser


def _train_overrides(args) -> dict:
    overrides = recipe_module.read_config_file(args.config) if args.config else {}
    overrides.update(recipe_module.parse_assignments(args.set))
    explicit = {
        "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "data_format": args.data_format,
        "strategy": args.strategy, "precision": args.precision, "out": args.out, "init_from": args.init_from,
    }
    overrides.update({k: v for k, v in explicit.items() if v is not None})
    if args.weights is not None:
        overrides["model_options.weights"] = recipe_module.parse_value(args.weights)
    for flag in ("smoke", "jit", "skip_bad"):
        if getattr(args, flag):
            overrides[flag] = True
    return overrides


def recipe_defaults(name: str) -> str:
    """The "recipe defaults" section of `visionzoo train MODEL --help`, read from the registry."""
    from .registry import RECIPES

    recipe = RECIPES.get(name)
    if recipe is None:
        return f"\nno model named {name!r}: see `visionzoo list`\n"

    def listing(options: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in options.items()) or "-"

    optimizer = dict(recipe.optimizer)
    spec = recipe.image_spec
    model_options = {k: v for k, v in recipe.model_options.items() if k != "weights"}
    rows = [
        ("epochs", recipe.epochs),
        ("batch size", recipe.batch_size),
        ("optimizer", f"{optimizer.pop('name', 'adam')} ({listing(optimizer)})"),
        ("learning rate", recipe.optimizer.get("learning_rate", "the optimizer's default")),
        ("weights", recipe.model_options.get("weights", "none (random); --weights RUN or FILE starts the layers it shares from "
                                             "a trained model" if "weights" in recipe.builder.parameter_names()
                                             else "- (no pretrained backbone)")),
        ("data formats", ", ".join(recipe.data_formats) + "  (detected in this order; --data-format forces one)"),
        ("input", f"{spec.height}x{spec.width} {spec.color_mode}"),
        ("model options", listing(model_options)),
        ("callbacks", "; ".join(f"{c['type']}({listing({k: v for k, v in c.items() if k != 'type'})})"
                                for c in recipe.callbacks) or "-"),
        ("augmentation", recipe.augmentation or "-"),
        ("class weight", recipe.class_weight or "-"),
        ("loss", recipe.loss),
        ("data options", listing(recipe.data_options)),
    ]
    lines = [f"\nrecipe defaults for {recipe.name} ({recipe.source}; {recipe.family}):"]
    lines += [f"  {label:<14} {value}" for label, value in rows]
    if recipe.reported:
        lines.append(f"  {'source result':<14} {recipe.reported}")
    return "\n".join(lines) + "\n"


def _train_help_model(argv: list[str]) -> str | None:
    """MODEL in `visionzoo [-v] train MODEL ... --help`, else None."""
    words = [w for w in argv if w not in ("-v", "--verbose")]
    if len(words) < 3 or words[0] != "train" or not ({"-h", "--help"} & set(words)) or words[1].startswith("-"):
        return None
    return words[1]


def command_list(args) -> None:
    if args.formats:
        from .data import FORMATS

        for name, data_format in sorted(FORMATS.items()):
            print(f"  {name:<22} {data_format.description}")
        return
    from .registry import families

    for family, recipes in families().items():
        if args.served and not any(r.served for r in recipes):
            continue
        print(family)
        for recipe in recipes:
            marker = "*" if recipe.served else " "
            print(f" {marker} {recipe.name:<34} {recipe.summary}")
        print()
    print("* served by the BentoML service")


def command_train(args) -> None:
    if args.resume and args.finish:
        raise ValueError("--resume continues a run, --finish ends it: pass one")
    existing = args.resume or args.finish
    if existing:
        flag = "--resume" if args.resume else "--finish"
        overrides = _train_overrides(args)
        if args.model or args.data_dir or overrides:
            given = ([args.model] if args.model else []) + (["--data-dir"] if args.data_dir else []) + sorted(overrides)
            raise ValueError(f"{flag} takes {existing} with its recorded settings ({existing}/config.json); "
                             f"drop {', '.join(given)}")
        from .train import finish_run, resume_run

        run_dir = resume_run(args.resume) if args.resume else finish_run(args.finish)
    else:
        if not args.model or not args.data_dir:
            raise ValueError("train needs MODEL and --data-dir DATA_DIR (or --resume RUN); see `visionzoo train --help`")
        from .train import resolve_config, run_training

        run_dir = run_training(resolve_config(args.model, args.data_dir, _train_overrides(args)))
    print(f"run folder: {run_dir}")
    print(f"next: visionzoo export {run_dir}")


def command_evaluate(args) -> None:
    import json

    from .train import evaluate_run

    splits = ("val", "test") if args.split == "all" else (args.split,)
    results = evaluate_run(args.run, splits, args.data_dir)
    print(json.dumps({split: {k: v for k, v in r.items() if k != "confusion_matrix"} for split, r in results.items()}, indent=2, default=str))


def command_export(args) -> None:
    from .export import export_run

    folder = export_run(args.run, args.out, args.name, args.savedmodel, force=args.force, tile_overlap=args.tile_overlap,
                        decision_weights=args.decision_weights)
    print(f"exported: {folder}")


def command_ensemble(args) -> None:
    from .ensemble import ensemble

    folder = ensemble(args.members, args.out, args.data_dir)
    if (folder / "metadata.json").is_file():  # merged from ONNX-only exports: already a served version
        from .revise import headline, read_metadata

        print(f"ensemble version: {folder}")
        for split, scores in read_metadata(folder)["metrics"].items():
            print(f"{split}: {headline(scores)}")
        return
    print(f"ensemble run: {folder}")
    print(f"export it with: visionzoo export {folder}")


def command_quantize(args) -> None:
    from .quantize import headline, quantize_export

    entry = quantize_export(args.export, args.data_dir, args.calibration_images)
    print(f"INT8 variant: {args.export / entry['file']}")
    print(f"test split: {headline(entry['test'])}")


def command_revise(args) -> None:
    from .revise import metrics_change, revise

    folder = revise(args.export, explain=args.explain, mirror=args.mirror_average, tile_overlap=args.tile_overlap,
                    learnable_classes=args.learnable_classes, decision_weights=args.decision_weights, data_dir=args.data_dir)
    print(f"revised: {folder}")
    for line in metrics_change(args.export, folder):
        print(line)


def command_reproduce(args) -> None:
    from .reproduce import reproduce

    overrides = recipe_module.parse_assignments(args.set)
    if args.smoke:
        overrides["smoke"] = True
    report = reproduce(args.models, Path(args.data_dir) if args.data_dir else None, args.out, args.report, overrides,
                       report_only=args.report_only, full_schedule=args.full_schedule)
    print(f"report: {report}")


def _predict_line(task: str, item: dict) -> str:
    """One image's answer as one line: label and probability (then the rest of the top k), abnormality
    and body part, or the class fractions."""
    if task == "classification":
        ranked = "  ".join(f"{entry['label']} {entry['probability']:.3f}" for entry in item["top_k"][1:])
        return f"{item['file']}\t{item['label']} {item['probability']:.3f}" + (f"\t({ranked})" if ranked else "")
    if task == "multitask":
        return (f"{item['file']}\t{item['label']} {item['abnormal_probability']:.3f}\t"
                f"body part {item['body_part']} {item['body_part_probability']:.3f}")
    fractions = sorted(item["class_fractions"].items(), key=lambda pair: -pair[1])
    shares = "  ".join(f"{label} {share:.3f}" for label, share in fractions if share > 0)
    return f"{item['file']}\t{item['width']}x{item['height']}\t{shares}"


def command_predict(args) -> None:
    """`visionzoo predict`: in-process inference (visionzoo.api); never imports TensorFlow."""
    import json

    from visionzoo.preprocessing import ImageDecodeError, open_image, peek_size
    from visionzoo.serving.processing import NPY_MAGIC

    for path in args.images:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        with path.open("rb") as file:
            is_npy = file.read(len(NPY_MAGIC)) == NPY_MAGIC
        if not is_npy and peek_size(path) is None:  # not an image: say why before the model loads (seconds)
            try:
                open_image(path, name=path.name)
            except ImageDecodeError as error:
                raise ValueError(str(error)) from None
    from visionzoo import api
    from visionzoo.serving.errors import ServingError

    if not args.verbose:
        logging.getLogger("visionzoo").setLevel(logging.WARNING)
    try:
        # one call, not a server: the engine that starts soonest (one blood-cell file: 2.9 s in all on ONNX Runtime,
        # 5.0 s on OpenVINO, whose faster batches save 4-7 ms per image), warmed only at the batches this call makes
        engine = args.engine or (None if _engine_configured() else "onnxruntime")
        model = api.load(args.model, models_dir=args.models_dir, version=args.model_version, engine=engine,
                         precision=args.precision, warmup_batch_sizes=(1, len(args.images)))
    except api.UnknownModel as error:
        raise ValueError(str(error)) from None
    with model:
        options = {} if args.top_k is None else {"top_k": args.top_k}
        if args.explain:
            options["explain"] = True
        try:
            if args.study:
                if "predict_study" not in model.endpoints:
                    raise ValueError(f"--study: {args.model} has no study answer (only multitask models do)")
                body = model.predict_study(args.images, **options)
            else:
                if "top_k" in options and model.task != "classification":
                    raise ValueError(f"--top-k: {args.model} is a {model.task} model, not a classifier")
                if args.explain and model.task == "segmentation":
                    raise ValueError(f"--explain: {args.model} is a segmentation model; its class map is the explanation")
                body = model.predict(args.images, **options)
        except ServingError as error:
            raise ValueError(str(error).splitlines()[0]) from None
        if args.explain:
            _write_heatmaps(args.explain, args.images, body.get("views") or body.get("predictions") or [])
        if args.json:
            print(json.dumps(body, indent=2))
        elif args.study:
            print(f"study\t{body['label']} {body['abnormal_probability']:.3f}\tbody part {body['body_part']}")
            for view in body["views"]:
                print(_predict_line(model.task, view))
        else:
            for item in body.get("predictions") or body.get("segmentations") or []:
                print(_predict_line(model.task, item))


def _engine_configured() -> bool:
    """Whether VISIONZOO_ENGINE is set, as the server's settings read it (any case; a bad value counts as
    set, so visionzoo.load reports it)."""
    from pydantic import ValidationError

    from visionzoo.serving import config

    try:
        return "engine" in config.ServerSettings().model_fields_set
    except ValidationError:
        return True


def _write_heatmaps(folder: Path, images: list[Path], answers: list[dict]) -> None:
    """Each answer's heatmap_png as FOLDER/<image name>.heatmap.png (atomic writes)."""
    import base64
    import os

    folder.mkdir(parents=True, exist_ok=True)
    for path, answer in zip(images, answers):
        target = folder / f"{path.stem}.heatmap.png"
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(base64.b64decode(answer["heatmap_png"]))
        os.replace(temporary, target)
        print(f"heatmap: {target}", file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    help_model = _train_help_model(argv)
    args = _parser(recipe_defaults(help_model) if help_model else "").parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"list": command_list, "train": command_train, "evaluate": command_evaluate, "export": command_export,
                "ensemble": command_ensemble, "quantize": command_quantize, "revise": command_revise,
                "reproduce": command_reproduce, "predict": command_predict}
    try:
        handlers[args.command](args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:  # the reader went away (`visionzoo list | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"visionzoo {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
