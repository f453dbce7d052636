"""The ``lutc`` command line: compile, run, tune and inspect quantized ONNX models."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from .errors import LutcError

console = Console(stderr=True, markup=False, highlight=False)
"""Messages hold user text (paths, shapes like ``[1, 16]``): never read as rich markup."""


def _build_args(args: argparse.Namespace) -> dict:
    return {
        "mode": args.mode,
        "symmetrize": args.symmetrize,
        "half_scales": args.half_scales,
        "threads": args.threads,
        "keep_dequantize": tuple(args.keep_dequantize),
        "quantize": args.quantize,
        "fuse": not args.no_fuse,
    }


def _compile(args: argparse.Namespace) -> int:
    from .builder import build
    from .decode import build_decoder, export_decoder

    if args.output:
        _check_compile_output(args)
    what = "the prompt and one-token step builds of " if args.decoder else ""
    with console.status(f"compiling {what}{args.model} for {args.target} (imports, rewrites, schedules, LLVM)..."):
        start = time.perf_counter()
        options = {"tuning_logs": args.tuning_logs, **_build_args(args)}
        models = build_decoder(args.model, args.target, **options) if args.decoder else (
            build(args.model, args.target, **options),)  # fmt: skip
    console.print(f"compiled in {time.perf_counter() - start:.1f} s; weights {models[0].weight_bytes / 1e6:.1f} MB")
    print(models[0].summary())
    if args.output and args.decoder:
        folder = export_decoder(*models, args.output)
        console.print(f"wrote {folder}/: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    elif args.output:
        path = models[0].export_library(args.output)
        console.print(f"wrote {path}, {path}.weights and {path}.lutc.json")
    return 0


def _rpc(args: argparse.Namespace):
    """The ``--rpc-tracker``/``--rpc-key`` device, or ``None``."""
    from .remote import RpcTracker

    if not (args.rpc_tracker or args.rpc_key):
        return None
    return RpcTracker.parse(args.rpc_tracker or "", args.rpc_key or "")


def _load_or_build(args: argparse.Namespace, model: str | None = None):
    """The compiled ``model`` (default ``args.model``): built from an ``.onnx`` file, or loaded."""
    from .builder import build
    from .compiled import load

    model = model or args.model
    device = _rpc(args)
    session = device.connect() if device is not None else None
    if Path(model).suffix == ".onnx":
        with console.status(f"compiling {model}..."):
            built = build(model, args.target, tuning_logs=args.tuning_logs, **_build_args(args))
        return built if session is None else built.on(session)
    if Path(model).is_dir():
        raise LutcError(f"{model} is a folder: 'lutc generate' runs a model folder or a decoder folder written by "
                        "'lutc compile --decoder -o'; 'lutc run' takes one library")  # fmt: skip
    return load(model, session)


def _feeds(model, specs: list[str], seed: int) -> dict[str, np.ndarray]:
    bad = [spec for spec in specs if "=" not in spec]
    if bad:
        raise LutcError(f"--input takes NAME=FILE.npy; got {bad}")
    given = dict(spec.split("=", 1) for spec in specs)
    unknown = sorted(set(given) - {i.name for i in model.inputs})
    if unknown:
        names = [i.name for i in model.inputs]
        raise LutcError(f"--input names {unknown} are not inputs of the model; it takes {names}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in model.inputs:
        if info.name in given:
            feeds[info.name] = _load_array(info.name, given[info.name])
            continue
        if any(not isinstance(d, int) for d in info.shape):
            raise LutcError(f"input {info.describe()} has dynamic dims: pass it with --input {info.name}=FILE.npy")
        feeds[info.name] = rng.standard_normal(info.shape).astype(info.dtype)
    return feeds


def _load_array(name: str, path: str) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as err:
        raise LutcError(f"input {name!r}: cannot read {path} as a .npy array ({err})") from None


def _target(text: str) -> str | dict:
    """A short target name, or a JSON dict given on the command line."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg} at column {err.colno})") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]; got {value}")
    return value


def _pair(text: str) -> str:
    if text.count("=") != 1 or text.startswith("=") or text.endswith("="):
        raise argparse.ArgumentTypeError(f"must be PAST=PRESENT (past_key.0=present.0.key); got {text!r}")
    return text


OUTPUT_NAME_LIMIT = 200
"""Characters of an output's name kept in its ``--output-dir`` file name (before ``_2`` and ``.npy``)."""


@dataclass(frozen=True)
class InputFile:
    """A file a command reads, which none of the files it writes may replace."""

    role: str
    path: Path


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same inode when both exist, else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _refuse_overwrite(flag: str, writes: Iterable[Path], inputs: Sequence[InputFile]) -> None:
    for path in writes:
        clash = next((i for i in inputs if _same_file(path, i.path)), None)
        if clash is not None:
            raise LutcError(f"{flag} would overwrite {clash.role} {clash.path}")


def _external_data(model: Path) -> list[InputFile]:
    """The external data files of the ``.onnx`` model's initializers (none if it cannot be read)."""
    import onnx

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:  # the build reports an unreadable model
        return []
    locations = {entry.value for t in graph.initializer for entry in t.external_data if entry.key == "location"}
    return [InputFile("the model's external data file", model.parent / name) for name in sorted(locations)]


def _library_files(library: Path) -> list[InputFile]:
    """The sidecar and weight file of a library written by ``lutc compile -o`` (as its sidecar names it)."""
    from .library import sidecar_of

    sidecar = sidecar_of(library)
    try:
        weights = json.loads(sidecar.read_text())["weights"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return [InputFile("the model's description", sidecar)]
    return [InputFile("the model's description", sidecar), InputFile("its weight file", library.parent / weights)]


def _model_inputs(model: str, tuning_logs: str | None) -> list[InputFile]:
    """Every file a command reads for ``model`` and ``--tuning-logs``."""
    path = Path(model)
    inputs = [InputFile("the input model", path)]
    if path.is_file():
        inputs += _external_data(path) if path.suffix == ".onnx" else _library_files(path)
    if tuning_logs and Path(tuning_logs).is_dir():
        inputs += [InputFile("the tuning log", p) for p in sorted(Path(tuning_logs).rglob("*")) if p.is_file()]
    return inputs


def library_files(output: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The library, weight file and sidecar ``CompiledModel.export_library(output)`` writes (``.so``
    appended to a path with no suffix)."""
    from .library import sidecar_of

    path = Path(output)
    library = path if path.suffix else path.with_name(path.name + ".so")
    return library, library.with_name(library.name + ".weights"), sidecar_of(library)


def decoder_files(folder: str | os.PathLike) -> tuple[Path, ...]:
    """The files ``lutc.decode.export_decoder`` writes into ``folder``."""
    from .decode import DECODER_FILES
    from .library import sidecar_of

    prompt, step, weights = (Path(folder) / name for name in DECODER_FILES)
    return prompt, step, weights, sidecar_of(prompt), sidecar_of(step)


def _check_compile_output(args: argparse.Namespace) -> None:
    """Refuse ``-o`` before building when it would replace a file the command reads."""
    inputs = _model_inputs(args.model, args.tuning_logs)
    flag, folder = f"-o {args.output}", Path(args.output)
    if not args.decoder:
        _refuse_overwrite(flag, library_files(folder), inputs)
        return
    _refuse_overwrite(flag, [folder], inputs[:1])
    if folder.exists() and not folder.is_dir():
        raise LutcError(f"{flag}: with --decoder, -o names a folder; {folder} is a file")
    _refuse_overwrite(flag, decoder_files(folder), inputs)


def output_file_names(names: Sequence[str]) -> list[str]:
    """One distinct ``.npy`` file name per output name: characters other than ``[A-Za-z0-9._-]``
    become ``_``, leading dots are dropped, an empty result is ``output_<index>``, and a name taken
    already (ignoring case) gets ``_2``, ``_3``, ..."""
    files: list[str] = []
    for index, name in enumerate(names):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:OUTPUT_NAME_LIMIT] or f"output_{index}"
        taken = {f.lower() for f in files}
        file, count = f"{stem}.npy", 1
        while file.lower() in taken:
            count += 1
            file = f"{stem}_{count}.npy"
        files.append(file)
    return files


def _output_paths(args: argparse.Namespace, model) -> list[Path]:
    """Where ``--output-dir`` saves each output; refused if one would replace a file the command reads."""
    if not args.output_dir:
        return []
    folder = Path(args.output_dir)
    paths = [folder / name for name in output_file_names([o.name for o in model.outputs])]
    inputs = _model_inputs(args.model, args.tuning_logs)
    inputs += [InputFile("the --input file", Path(spec.split("=", 1)[1])) for spec in args.input if "=" in spec]
    _refuse_overwrite(f"--output-dir {folder}", paths, inputs)
    folders = [p for p in paths if p.is_dir() and not p.is_symlink()]
    if folders:
        raise LutcError(f"--output-dir {folder}: cannot save an output as {folders[0]}: it is a directory")
    return paths


def _save_array(folder: Path, path: Path, value: np.ndarray) -> None:
    """Save ``value`` at ``path`` in ``folder`` through a new temporary file there (created with the
    usual permissions) moved into place: a link already at ``path`` is replaced, never followed."""
    if path.parent.resolve() != folder.resolve():
        raise LutcError(f"cannot write {path}: it is not in {folder}")
    temporary = folder / f".lutc-{secrets.token_hex(8)}.npy"
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(handle, "wb") as file:
            np.save(file, value)
        os.replace(temporary, path)
    except OSError as err:
        raise LutcError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _run(args: argparse.Namespace) -> int:
    if args.output_dir and not Path(args.output_dir).is_dir():
        raise LutcError(f"--output-dir {args.output_dir}: no such directory")
    model = _load_or_build(args)
    paths = _output_paths(args, model)
    feeds = _feeds(model, args.input, args.seed)
    outputs = model(**feeds)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        model(**feeds)
        times.append(time.perf_counter() - start)
    for index, (info, value) in enumerate(zip(model.outputs, outputs, strict=True)):
        stats = f"shape {value.shape} dtype {value.dtype} mean {value.mean():.6g} std {value.std():.6g}"
        print(f"{info.name}: {stats}" + (f" -> {paths[index]}" if paths else ""))
        if paths:
            _save_array(Path(args.output_dir), paths[index], value)
    if times:
        print(f"latency over {len(times)} runs: min {min(times) * 1e3:.3f} ms, median {np.median(times) * 1e3:.3f} ms")
    return 0


def _token_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated token ids (5,17,33); got {text!r}") from None
    if not ids or min(ids) < 0:
        raise argparse.ArgumentTypeError(f"must be one or more non-negative token ids; got {text!r}")
    return ids


def _generate(args: argparse.Namespace) -> int:
    from .generator import encode_prompt, model_path
    from .sampling import Sampling
    from .tokenizer import load_tokenizer

    _check_generate_flags(args)
    path = model_path(args.model)
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty, args.seed)
    if args.prompt is None:
        return _generate_ids(args, path, sampling, *_decoder_models(args, path))
    tokenizer = load_tokenizer(args.tokenizer or (path if path.is_dir() else path.parent))
    ids = encode_prompt(tokenizer, args.prompt, args.chat, args.system)  # before compiling: fails fast
    return _generate_text(args, ids, tokenizer, sampling, _decoder_models(args, path))


def _check_generate_flags(args: argparse.Namespace) -> None:
    text = [flag for flag, given in (("--chat", args.chat), ("--system", args.system is not None),
                                     ("--stop", args.stop)) if given]  # fmt: skip
    if text and args.prompt is None:
        raise LutcError(f"{', '.join(text)} need a text prompt: give it with --prompt")
    if args.compare_ort and (args.prompt is not None or args.temperature or args.repetition_penalty != 1):
        raise LutcError("--compare-ort compares greedy token ids: use it with --prompt-ids and no sampling")


def _decoder_models(args: argparse.Namespace, path: Path) -> tuple:
    """``(model, step_model)``: a decoder folder's, or the model built or loaded (and, for an ``.onnx``
    model without ``--one-model``, its one-token step build; else ``None``)."""
    if path.is_dir():
        from .decode import load_decoder

        with console.status(f"loading {path}..."):
            return load_decoder(path)
    model = _load_or_build(args, str(path))
    if path.suffix != ".onnx" or args.one_model:
        return model, None
    from .builder import build_sharing
    from .decode import step_shapes

    with console.status("compiling the one-token decode step..."):
        step_model = build_sharing(path, args.target, model.weight_set, tuning_logs=args.tuning_logs,
                                   shapes=step_shapes(1), **_build_args(args))  # fmt: skip
    return model, step_model if model.session is None else step_model.on(model.session)


def _cache_names(args: argparse.Namespace) -> dict[str, str] | None:
    return dict(spec.split("=", 1) for spec in args.cache_name) or None


def _generate_ids(args: argparse.Namespace, path: Path, sampling, model, step_model) -> int:
    """``--prompt-ids``: the token ids generated, and the timings."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .decode import generate
    from .sampling import chooser

    ids = np.array([args.prompt_ids], np.int64)
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as bar:
        task = bar.add_task("generate", total=args.max_new_tokens)
        result = generate(model, ids, args.max_new_tokens, step_model=step_model, eos_token_id=args.eos_token_id,
                          progress=lambda step: bar.update(task, completed=step), cache_names=_cache_names(args),
                          choose=chooser(sampling, ids))  # fmt: skip
    print("tokens:", ",".join(str(t) for t in result.tokens[0]))
    print("lutc:", result.describe())
    if args.compare_ort:
        return _compare_with_ort(args, path, model, ids, result)
    return 0


def _generate_text(args: argparse.Namespace, ids: list[int], tokenizer, sampling, models: tuple) -> int:
    """``--prompt``: the answer's text on stdout as it comes; the speeds on stderr."""
    from .generator import Completion, Generator

    generator = Generator(models, tokenizer=tokenizer, cache_names=_cache_names(args))
    eos = None if args.eos_token_id is None else [args.eos_token_id]
    tokens = []
    for token in generator.stream(ids, args.max_new_tokens, sampling, stop=args.stop, eos_token_ids=eos):
        sys.stdout.write(token.text)
        sys.stdout.flush()
        tokens.append(token)
    sys.stdout.write("\n")
    console.print(Completion.of(ids, tokens).describe())
    return 0


def _compare_with_ort(args: argparse.Namespace, path: Path, model, ids: np.ndarray, result) -> int:
    """The same greedy loop on ONNX Runtime (MatMulNBits at accuracy_level 0): tokens and speed."""
    import onnx

    from .bench.generate import ort_generate
    from .decode import cache_layout

    if path.suffix != ".onnx":
        raise LutcError("--compare-ort needs the .onnx model (ONNX Runtime runs it)")
    layout = cache_layout(model.inputs, model.outputs, _cache_names(args))
    threads = args.threads or 1
    theirs = ort_generate(onnx.load(path), layout, ids, result.tokens.shape[1], threads, 0)
    same = np.array_equal(theirs.tokens, result.tokens)
    print(f"ORT (accuracy_level 0, {threads} thread(s)):", theirs.describe())
    verdict = "identical to ORT's" if same else "differ from ORT's: " + ",".join(map(str, theirs.tokens[0]))
    print("greedy tokens", verdict)
    return 0 if same or args.mode == "fast" else 1


def _tune(args: argparse.Namespace) -> int:
    from .tune_model import tune

    log_dir = Path(args.log_dir)
    if log_dir.exists() and not log_dir.is_dir():
        what = "is the input model" if _same_file(log_dir, Path(args.model)) else "is a file"
        raise LutcError(f"--log-dir {args.log_dir} {what}; it names a folder")
    rpc = _rpc(args)
    build_args = {k: v for k, v in _build_args(args).items() if k != "threads"}  # --threads: timing threads here
    results = tune(
        args.model, args.target, trials=args.trials, log_dir=args.log_dir, rpc=rpc, timeout=args.timeout,
        threads=args.threads, measure=args.measure, progress=not args.no_progress, **build_args,
    )  # fmt: skip
    for result in results:
        best = "no successful trial" if result.best_seconds is None else f"best {result.best_seconds * 1e6:.1f} us"
        calls = f" ({result.calls} calls)" if result.calls > 1 else ""
        print(f"{result.name}{calls}: {result.trials_run} trials now, {result.trials_total} in the log, {best}")
        if result.failures:
            print(f"  {result.failures}", file=sys.stderr)
    print(f"log: {Path(args.log_dir).resolve()}  (use it with: lutc compile {args.model} --tuning-logs {args.log_dir})")
    failed = [r.name for r in results if r.trials_run and r.best_seconds is None]
    if failed:
        print(f"error: no trial succeeded for {', '.join(failed)} (reasons above)", file=sys.stderr)
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    import warnings

    from .gguf.convert import convert

    with console.status(f"converting {args.model}..."), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the requantized tensors are in the summary below
        conversion = convert(args.model, args.output, tokenizer=not args.no_tokenizer)
    print(conversion.describe())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if Path(args.model).suffix != ".onnx":
        from .compiled import load

        print(load(args.model).summary())
        return 0
    from .frontend import inspect_onnx

    _, info = inspect_onnx(args.model)
    print(f"opset {info.opset}")
    print("inputs:  " + ", ".join(i.describe() for i in info.inputs))
    print("outputs: " + ", ".join(o.describe() for o in info.outputs))
    print(f"quantized matmuls: {len(info.quantized)}")
    for name, node in info.quantized.items():
        print(f"  {name}: {node.op_type} N={node.n} K={node.k} {node.fmt.name}")
    return 0


def _add_build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default="x86",
        type=_target,
        help="x86 (this machine's CPU), x86-avx2, x86-avx512, llvm (portable), arm / aarch64 (ARMv8.2-A NEON + "
        "dotprod), arm-cortex-a76, arm-neoverse-n1, arm-neoverse-v1, arm-apple-m1, cuda (sm_80) / cuda-sm80, "
        "cuda-sm86, cuda-sm89, cuda-sm90 (NVIDIA GPUs), or a target JSON",
    )
    parser.add_argument("--mode", choices=["fast", "exact"], default="fast", help="int8 tables (fast) or float tables")
    parser.add_argument(
        "--symmetrize", choices=["auto", "on", "off"], default="auto", help="store half tables and recover the sign"
    )
    parser.add_argument(
        "--half-scales", choices=["auto", "on", "off"], default="auto",
        help="fast mode: store scales and offsets as float16, 10-17%% fewer bytes a token (auto: where float16 "
        "converts in hardware, x86 F16C, ARM and CUDA; off keeps the model's float32)",
    )  # fmt: skip
    parser.add_argument("--threads", type=_positive_int, default=None, help="TVM CPU threads (default: all cores)")
    parser.add_argument(
        "--keep-dequantize",
        action="append",
        default=[],
        metavar="NODE",
        help="a node to leave on the dequantize path (repeat the flag for more)",
    )
    parser.add_argument(
        "--quantize", default=None, metavar="FORMAT", help="quantize float MatMul/Gemm weights (w2g128)"
    )
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="no table sharing and no norm folded into a table precompute (to measure what fusion buys)",
    )


def _add_rpc_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT", help=f"{what} on a device behind this TVM RPC "
                        "tracker (cross-compiled for the target's triple; e.g. the emulated aarch64 device of "
                        "tools/arm_device.py)")  # fmt: skip
    parser.add_argument("--rpc-key", metavar="KEY", help="the device key registered with the RPC tracker")


def _add_tune_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=_positive_int, default=64, help="trials per distinct LUT kernel, in total "
                        "over runs (tuning again with the same log resumes; default 64)")  # fmt: skip
    parser.add_argument("--log-dir", default="tuning_logs", help="tuning log directory (default tuning_logs); "
                        "records go to LOG_DIR/<target-tag>/")  # fmt: skip
    _add_rpc_flags(parser, "time candidates")
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="seconds one candidate may run (default 60)"
    )
    parser.add_argument("--measure", choices=["cold", "hot"], default="cold",
                        help="cold: flush CPU caches before each timed run (weights from DRAM, as in a large "
                        "model); hot: weights stay cached (default cold)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lutc", description="Compile low-bit quantized ONNX models to LUT kernels.")
    sub = top.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="compile an ONNX model and print what runs where")
    comp.add_argument("model", help="the quantized .onnx model")
    comp.add_argument("-o", "--output", help="write a shared library (and its .weights and .lutc.json) here; with "
                      "--decoder, a folder")  # fmt: skip
    comp.add_argument("--decoder", action="store_true", help="build a decoder's prompt and one-token step models "
                      "(sharing one weight file) for 'lutc generate FOLDER'")  # fmt: skip
    _add_build_flags(comp)
    comp.set_defaults(func=_compile)
    run = sub.add_parser("run", help="run a compiled .so or an .onnx model on inputs, with timing")
    run.add_argument("model", help="a library written by 'lutc compile -o' or an .onnx model")
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array")
    run.add_argument("--seed", type=int, default=0, help="seed for inputs not given (random normal)")
    run.add_argument("--repeat", type=_count, default=10, help="timed runs after the first (0 or more)")
    run.add_argument("--output-dir", help="save each output as NAME.npy here")
    _add_build_flags(run)
    _add_rpc_flags(run, "run the model (timings are the device's, over the network)")
    run.set_defaults(func=_run)
    for command in (comp, run):
        command.add_argument("--tuning-logs", metavar="DIR", help="apply the tuning log written by 'lutc tune' here")
    gen = sub.add_parser("generate", help="text or token generation with a KV cache on a decoder model, with tokens/s",
                         description="Decoding over a decoder with past/present KV inputs and outputs (torch.onnx."
                         "export with past_key_values, or onnxruntime-genai's model builder): the prompt in one call, "
                         "then one token per call, the cache kept in TVM memory. With --prompt, the text streams to "
                         "stdout (the tokenizer.json next to the model) and the speeds go to stderr.")  # fmt: skip
    gen.add_argument("model", help="a model folder (model.onnx, genai_config.json, tokenizer.json), a decoder .onnx "
                     "model, a .gguf file (converted once into ~/.cache/lutc/gguf, as 'lutc convert'), "
                     "a folder written by 'lutc compile --decoder -o', or a library written by 'lutc compile "
                     "-o'")  # fmt: skip
    prompt = gen.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="the prompt as text (needs the model's tokenizer.json); prints the answer's "
                        "text")  # fmt: skip
    prompt.add_argument("--prompt-ids", type=_token_ids, default=[1, 2, 3, 4, 5, 6, 7, 8], metavar="IDS",
                        help="comma-separated prompt token ids (default 1,...,8); prints the token ids")  # fmt: skip
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    gen.add_argument("--system", help="a system message before the prompt (implies --chat)")
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop once the text holds TEXT, "
                     "which is left out (repeat the flag for more)")  # fmt: skip
    gen.add_argument("--tokenizer", metavar="DIR", help="the folder of tokenizer.json (default: the model's folder)")
    gen.add_argument("--temperature", type=_non_negative_float, default=0.0, help="sampling temperature (default 0: "
                     "greedy)")  # fmt: skip
    gen.add_argument("--top-k", type=_count, default=0, help="sample from the K likeliest tokens (default 0: all)")
    gen.add_argument("--top-p", type=_probability, default=1.0, help="sample from the likeliest tokens whose "
                     "probability reaches P, in (0, 1] (default 1: all)")  # fmt: skip
    gen.add_argument("--repetition-penalty", type=_positive_float, default=1.0, help="divide positive logits (multiply "
                     "negative ones) of tokens seen in the prompt or output by this (default 1: none)")  # fmt: skip
    gen.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: a fresh one each run)")
    gen.add_argument("--cache-name", action="append", default=[], type=_pair, metavar="PAST=PRESENT",
                     help="pair a past cache input with its present output where lutc cannot tell from the graph "
                     "(repeat for each past input)")  # fmt: skip
    gen.add_argument("--max-new-tokens", type=_positive_int, default=32, help="tokens to generate (default 32)")
    gen.add_argument("--eos-token-id", type=int, default=None, help="stop once this token is generated")
    gen.add_argument("--compare-ort", action="store_true", help="run the same loop on ONNX Runtime (accuracy_level 0) "
                     "and say whether the tokens agree; exits 1 if they differ in --mode exact")  # fmt: skip
    gen.add_argument("--one-model", action="store_true", help="decode on the prompt's (dynamic) build too, instead "
                     "of a second build with batch and sequence length fixed (one compile, slower steps)")  # fmt: skip
    gen.add_argument("--tuning-logs", metavar="DIR", help="apply the tuning log written by 'lutc tune' here")
    _add_build_flags(gen)
    _add_rpc_flags(gen, "generate")
    gen.set_defaults(func=_generate)
    tune = sub.add_parser("tune", help="auto-tune the model's LUT kernels into a reusable tuning log")
    tune.add_argument("model", help="the quantized .onnx model")
    _add_build_flags(tune)
    _add_tune_flags(tune)
    tune.set_defaults(func=_tune)
    conv = sub.add_parser("convert", help="convert a GGUF model into an ONNX model folder (ORT, genai, lutc)",
                          description="A llama.cpp GGUF decoder (llama, mistral, qwen2) as a folder that ONNX Runtime, "
                          "onnxruntime-genai and lutc all run: model.onnx (+ model.onnx.data) in onnxruntime-genai's "
                          "builder op set, genai_config.json, tokenizer.json and tokenizer_config.json. Q4_0, Q8_0, "
                          "Q4_1 and Q4_K weights are carried over exactly; other types are requantized (named in the "
                          "summary).")  # fmt: skip
    conv.add_argument("model", help="the .gguf file")
    conv.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write (created; its files "
                      "of the same names are replaced)")  # fmt: skip
    conv.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer files (for a vocabulary "
                      "lutc does not rebuild: sentencepiece's 'llama' model; then 'lutc generate --tokenizer "
                      "DIR')")  # fmt: skip
    conv.set_defaults(func=_convert)
    insp = sub.add_parser("inspect", help="list inputs, outputs and quantized matmuls without compiling")
    insp.add_argument("model", help="an .onnx model or a compiled library")
    insp.set_defaults(func=_inspect)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (LutcError, NotImplementedError, ValueError) as err:
        console.print(f"error: {err}", style="red")
        return 2


if __name__ == "__main__":
    sys.exit(main())
