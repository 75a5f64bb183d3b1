"""The `cdlm` command: `sample`, `eval`, `export` and `lab` here, and LightningCLI's fit,
validate and test (`cdlm.lightning_cli`). Each command imports what it needs when it runs, so
`cdlm --help` prints at once.

Every failure the user can cause ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        raise SystemExit(f"{self.prog}: error: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="checkpoint written by `cdlm fit`")
    source.add_argument("--model", dest="ckpt_path", metavar="DIR_OR_ID",
                        help="model folder written by `cdlm export`, or a hub id (user/name)")
    p.add_argument("--revision", default=None, help="the hub revision (branch, tag or commit) of a hub id")
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    from cdlm.sampling.settings import sampler_flags

    for name, (kind, help) in sampler_flags().items():
        p.add_argument(f"--{name}", type=_boolean if kind is bool else kind, default=None, help=f"{help} (default: the model's)")
    p.add_argument("--anchor", action="append", default=[], metavar="POS=WORD",
                   help="fix a word at a token position (from 0); repeatable")
    p.add_argument("--template", default=None, help='e.g. "the ___ serves ___ food ." (one ___ per token)')
    p.add_argument("--prefix", default=None)
    p.add_argument("--suffix", default=None, help="needs --length or --template")
    p.add_argument("--length", type=_length, default=None,
                   help='exact number of tokens, or "data": each sample draws one from the training texts\' lengths')
    p.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE",
                   help="condition on an attribute, e.g. food=french (models fit with a condition_column); repeatable")
    p.add_argument("--guidance_scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's; 1 = plain conditional)")
    p.add_argument("--classifier_ckpt", default=None,
                   help="an AttributeClassifier trained on this model: its gradient guides towards --attribute")
    p.add_argument("--classifier_scale", type=float, default=1.0, help="weight of the classifier's gradient")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available)")


def _length(value: str):
    if value == "data":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{value!r} is neither a number of tokens nor "data"') from None


def _boolean(value: str) -> bool:
    # anything but these would silently read as false
    answer = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(value.lower())
    if answer is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a boolean (true/false, 1/0, yes/no)")
    return answer


MAX_SAMPLES = 1_000_000  # every sample is held in memory: more would run until memory ends


def _positive(v) -> bool:
    return v >= 1


# option → (test, what it must be): the flags whose values argparse's types alone let through;
# an option left at None takes the model's default and is not checked.
_CHECKS = {
    "num_samples": (lambda v: 1 <= v <= MAX_SAMPLES, f"a positive integer at most {MAX_SAMPLES:,}"),
    "seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),  # numpy's range
    "batch_size": (_positive, "a positive integer"),
    "length": (lambda v: v == "data" or v >= 1, 'a positive number of tokens or "data"'),
    "guidance_scale": (math.isfinite, "a finite number"),
    "classifier_scale": (math.isfinite, "a finite number"),
    "nll_batches": (lambda v: v >= 0, "a non-negative integer"),  # eval only
    "time_budget": (lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0"),  # eval only
}


def _check(args) -> None:
    for name in ("ckpt_path", "reference_ckpt", "classifier_ckpt", "output"):
        if getattr(args, name, None) == "":  # '' would be ignored, or read as the current folder
            raise ValueError(f"--{name} is empty; give a path")
    for name, (ok, must_be) in _CHECKS.items():
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            raise ValueError(f"--{name} must be {must_be}, got {value}")
    from cdlm.checkpoints import resolve_device  # before loading: torch.load's failure would blame the file

    args.device = resolve_device(args.device)


def _request(args):
    """The Request (known tokens, length, attributes, guidance) the flags ask for."""
    from cdlm.control.constraints import parse_anchor
    from cdlm.control.request import Request

    classifier = None
    if args.classifier_ckpt:
        classifier = _load(args.classifier_ckpt, args.device, *GUIDES)[0]
    return Request(anchors=[parse_anchor(a) for a in args.anchor] or None, prefix=args.prefix, suffix=args.suffix,
                   template=args.template, length=args.length, attributes=args.attribute or None,
                   guidance_scale=args.guidance_scale, classifier=classifier, classifier_scale=args.classifier_scale)


def _settings(args) -> dict:
    from cdlm.sampling.settings import sampler_flags

    return {k: getattr(args, k) for k in sampler_flags() if getattr(args, k) is not None}


# the kinds of model (`StepModule.kind`) each input takes, and what to say of another
GENERATES = (("continuous", "masked", "autoregressive"), "does not generate (an AttributeClassifier goes in --classifier_ckpt)")
SCORES = (("autoregressive",), "is not an autoregressive model")
GUIDES = (("classifier",), "is not an AttributeClassifier")


def _load(path: str, device: str, kinds: tuple[str, ...], otherwise: str, revision: str | None = None):
    """(model, data hyperparameters) of a checkpoint, model folder or hub id whose model is of one of `kinds`."""
    from cdlm.hub import load

    model = load(path, device, revision)
    data_hparams = model.data_hparams or {}
    if model.kind not in kinds:
        raise ValueError(f"{path!r} holds the model {type(model).__name__}, which {otherwise}")
    return model, data_hparams


def _check_output(args) -> None:
    """--output never replaces an input, nor (without --overwrite) any existing file."""
    out = Path(args.output).resolve()
    for flag in ("ckpt_path", "reference_ckpt", "classifier_ckpt"):
        given = getattr(args, flag, None)
        if given and (Path(given).resolve() == out or Path(given).resolve() in out.parents):
            raise ValueError(f"--output {args.output!r} would replace the input --{flag}; choose another file")
    if out.is_dir():
        raise ValueError(f"--output {args.output!r} is a directory; give a file name")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--output {args.output!r} exists; pass --overwrite to replace it")


def cmd_sample(argv: list[str]) -> None:
    p = _Parser(prog="cdlm sample", description="Generate text from a checkpoint.")
    _common(p)
    p.add_argument("--output", default=None, help="write JSON lines (text, tokens) to this file")
    p.add_argument("--overwrite", action="store_true", help="let --output replace an existing file")
    args = p.parse_args(argv)
    _check(args)
    if args.output:
        _check_output(args)  # before sampling, which may take long
    model, _ = _load(args.ckpt_path, args.device, *GENERATES, args.revision)
    request = _request(args)
    if request.classifier is not None and request.attributes is None:
        raise ValueError("--classifier_ckpt guides towards attributes: give --attribute")
    import lightning as L

    L.seed_everything(args.seed, verbose=False)
    from cdlm.progress import network_calls, sampling_calls

    total = sampling_calls(model, args.num_samples, args.batch_size, _settings(args), request.prefix)
    with network_calls(model, "sampling", total):
        gen = model.sample_ids(args.num_samples, seed=args.seed, batch_size=args.batch_size, request=request,
                               **_settings(args))
    texts = model.decode(gen.ids)
    if args.output:
        from cdlm.checkpoints import write_atomically  # an interrupted write leaves the old file whole

        lines = [json.dumps({"text": text, "tokens": [model.tokenizer.id_to_token(i) for i in ids]}) + "\n"
                 for text, ids in zip(texts, gen.ids.tolist())]
        write_atomically(args.output, lambda f: f.write("".join(lines).encode("utf-8")))
    for text in texts:
        print(text)


def cmd_eval(argv: list[str]) -> None:
    p = _Parser(prog="cdlm eval", description="Sample from a checkpoint and print quality metrics as JSON.")
    _common(p)
    p.set_defaults(num_samples=256)
    p.add_argument("--reference_ckpt", default=None, help="autoregressive checkpoint that scores samples (gen_ppl)")
    p.add_argument("--nll_batches", type=int, default=8, help="held-out batches for the NLL (bound); 0 skips it")
    p.add_argument("--ode_nll", action="store_true",
                   help="also the dequantised probability-flow ODE likelihood (continuous diffusion models; slow)")
    p.add_argument("--time_budget", type=float, default=60.0,
                   help="seconds of rejection sampling for an autoregressive model given constraints beyond a prefix")
    p.add_argument("--attributes_from_data", action="store_true",
                   help="condition each sample on the record of a held-out text (attribute control)")
    p.add_argument("--format", choices=("json", "md"), default="json")
    args = p.parse_args(argv)
    _check(args)
    from cdlm.evaluation import evaluate, heldout_data

    model, data_hparams = _load(args.ckpt_path, args.device, *GENERATES, args.revision)
    reference = _load(args.reference_ckpt, args.device, *SCORES)[0] if args.reference_ckpt else None
    data, problem = heldout_data(model, data_hparams)
    if problem:
        print(f"cdlm eval: no held-out metrics ({problem})", file=sys.stderr)
    request = _request(args)
    from cdlm.progress import eval_calls, network_calls

    total = eval_calls(model, request, _settings(args), args.num_samples, args.batch_size, data, reference,
                       args.nll_batches, args.ode_nll)
    with network_calls(model, "eval", total, extra_models=[reference]):
        result = evaluate(model, request, _settings(args), args.num_samples, args.seed, args.batch_size, data,
                          reference, args.nll_batches, args.time_budget, args.attributes_from_data, args.ode_nll)
    if args.format == "json":
        print(json.dumps(result))
    else:
        print("| metric | value |\n| --- | --- |")
        for k, v in result.items():
            print(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")


def cmd_diagnose(argv: list[str]) -> None:
    p = _Parser(prog="cdlm diagnose", description="How many bits a checkpoint's model gains from context, and whether "
                "it reads the order: a table, then one JSON line (`cdlm.diagnostics`).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="checkpoint written by `cdlm fit`")
    source.add_argument("--model", dest="ckpt_path", metavar="DIR_OR_ID",
                        help="model folder written by `cdlm export`, or a hub id (user/name)")
    p.add_argument("--revision", default=None, help="the hub revision (branch, tag or commit) of a hub id")
    p.add_argument("--batches", type=int, default=4, help="held-out batches to score")
    p.add_argument("--num_times", type=int, default=16, help="noise levels per sequence of the diffusion bounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    args = p.parse_args(argv)
    for name in ("batches", "num_times"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    _check(args)
    from cdlm.diagnostics import diagnose_heldout, format_table
    from cdlm.evaluation import heldout_data

    model, data_hparams = _load(args.ckpt_path, args.device, *GENERATES, args.revision)
    data, problem = heldout_data(model, data_hparams)
    if data is None:
        raise ValueError(f"{args.ckpt_path!r}: no held-out data to diagnose on ({problem or 'the checkpoint names no data'})")
    result = diagnose_heldout(model, data, args.batches, args.num_times, args.seed)
    print(format_table(result))
    print(json.dumps(result))


def _root_message(err: BaseException) -> str:
    """The first line of the innermost cause: jsonargparse wraps errors raised while linking."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def cmd_export(argv: list[str]) -> None:
    p = _Parser(prog="cdlm export", description="Write a checkpoint's model as a model folder, the Hub's way: "
                "model.safetensors, config.json, tokenizer.json and a model card (README.md), without pickle "
                "(read by `--model DIR`, `cdlm.load(DIR)` and `Model.from_pretrained(DIR)`).")
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by `cdlm fit`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if missing)")
    p.add_argument("--metrics", default=None, metavar="FILE",
                   help="a JSON object of measured metrics (e.g. `cdlm eval`'s output) for the model card")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    args = p.parse_args(argv)
    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(Path(args.metrics).read_text(encoding="utf-8").strip().splitlines()[-1])
        except (OSError, IndexError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"--metrics {args.metrics!r} is not a readable JSON object ({type(err).__name__})") from None
        if not isinstance(metrics, dict):
            raise ValueError(f"--metrics {args.metrics!r} holds {type(metrics).__name__}, not a JSON object")
    from cdlm.hub import export

    print(export(args.ckpt_path, args.out, overwrite=args.overwrite, metrics=metrics))


COMMANDS = (  # (name, one line): what `cdlm --help` lists, in this order
    ("sample", "print texts generated by a checkpoint or an exported model (anchors, templates, attributes)"),
    ("eval", "sample and print quality metrics as JSON: validity, NLL bound, gen_ppl, NFE, ..."),
    ("diagnose", "the bits a model gains from context, and whether it reads the order (table + JSON)"),
    ("export", "write a checkpoint's model as a model folder: safetensors, config, tokenizer, model card"),
    ("lab", "measure the seed's claims against AR: reversal, data-efficiency, anchors, loops"),
    ("fit", "train a model (Lightning: --config FILE, --model CLASS, --data.*, --trainer.*)"),
    ("validate", "the validation loss of a checkpoint (Lightning)"),
    ("test", "the test loss of a checkpoint (Lightning)"),
)
LIGHTNING_COMMANDS = ("fit", "validate", "test")

USAGE = "usage: cdlm COMMAND [options]    (cdlm COMMAND --help: the command's options)\n\ncommands:\n" + "\n".join(
    f"  {name:<9} {line}" for name, line in COMMANDS) + """

Start with `cdlm fit --config configs/quickstart.yaml`, then
`cdlm sample --ckpt_path runs/quickstart/checkpoints/last.ckpt`. TensorBoard: `tensorboard --logdir runs`."""


def cmd_lab(argv: list[str]) -> None:
    from cdlm.lab import main as lab_main

    lab_main(argv)


PREDICT = ("`predict` is not a cdlm command: the models define no predict step (a diffusion model has no "
           "one output per input); `cdlm sample --output FILE` writes samples")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):  # before importing Lightning's CLI, which takes seconds
        print(USAGE)
        return
    commands = {"sample": cmd_sample, "eval": cmd_eval, "diagnose": cmd_diagnose, "export": cmd_export, "lab": cmd_lab}
    try:
        if argv[0] in commands:
            commands[argv[0]](argv[1:])
        elif argv[0] in LIGHTNING_COMMANDS or argv[0].startswith("-"):  # e.g. `cdlm --config X fit`
            from cdlm.lightning_cli import run_lightning  # imported here: Lightning's CLI takes seconds to load

            run_lightning(argv)
        elif argv[0] == "predict":
            raise SystemExit(f"cdlm: error: {PREDICT}")
        else:
            names = ", ".join(name for name, _ in COMMANDS)
            raise SystemExit(f"cdlm: error: unknown command {argv[0]!r}; commands: {names} (cdlm --help)")
    except KeyboardInterrupt:
        print("cdlm: interrupted", file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT, what shells report for Ctrl-C
    except Exception as err:  # anything else (Lightning's MisconfigurationException, torch errors) reads the same
        if os.environ.get("CDLM_TRACEBACK"):  # CDLM_TRACEBACK=1 shows the whole traceback, for debugging
            raise
        message = _root_message(err)
        spawned = getattr(sys.modules.get("torch.multiprocessing"), "ProcessRaisedException", ())
        if isinstance(err, spawned):  # a spawned worker's traceback, as text:
            message = str(err).strip().splitlines()[-1]  # its last line names the error
        sys.exit(f"cdlm: error: {message}")


if __name__ == "__main__":
    main()
