"""The ``bagcompile`` command line: train, export, predict, inspect, bench, reproduce.

Each command is a short function that delegates to the library. Results go to stdout; progress
and logs to stderr. Bad input ends with one line on stderr and a non-zero exit, no traceback.
"""
from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import warnings
from pathlib import Path

import click

from ._version import __version__


def friendly_errors(command):
    """Turn the library's input errors into click's one-line error (exit 1)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, OSError, RuntimeError, ImportError) as error:
            raise click.ClickException(str(error) or type(error).__name__) from None

    return wrapper


class InputError(click.UsageError):
    """Bad input found after the arguments are parsed: exit 2 like a usage error, but one line
    on stderr (no usage block), like every other error of this CLI."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


class _Progress:
    """One status line on stderr, rewritten in place on a terminal, one line per update otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, message: str, done: int, total: int | None):
        line = message if total is None else f"[{done}/{total}] {message}"  # None: total unknown
        if self.tty:
            click.echo("\r" + line.ljust(len(self.last)), err=True, nl=False)
        elif any(word in message for word in ("done", "kept", "training", "scored")):
            click.echo(line, err=True)
        self.last = line

    def close(self):
        if self.tty and self.last:
            click.echo(err=True)


@contextlib.contextmanager
def _one_line_warnings():
    """Python warnings (e.g. samples in every member's bag) as one 'Warning: ...' line on stderr,
    without the source line Python's default display adds."""
    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"Warning: {message}", err=True)
        yield


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _OneLineErrors(click.Group):
    """click's standalone mode, except that a usage error is one ``Error: ...`` line naming the
    command's ``--help`` (click prints the usage block and a hint first)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with _one_line_warnings():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as error:  # bare `bagcompile`: click shows the help text
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            path = error.ctx.command_path if error.ctx is not None else (prog_name or "bagcompile")
            click.echo(f"Error: {error.format_message()} (see '{path} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bagcompile")
def cli():
    """Train bagged LSTM ensembles, compile each bag into ONE ONNX file, and run it anywhere.

    \b
    Typical flow:
      bagcompile train japanese_vowels --out runs/jv     # train a bag, save the run
      bagcompile export runs/jv -o jv.onnx               # compile + verify against PyTorch
      bagcompile predict jv.onnx input.npz -o pred.csv   # run it (numpy + onnxruntime only)
      bagcompile inspect jv.onnx                         # what is inside the file
    """


@cli.command()
@click.argument("source")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory to write (weights, config, bootstrap indices). Re-running into the "
                   "same directory resumes: finished members are kept, also when --members grows.")
@click.option("--members", "n_members", type=click.IntRange(1, 1024), help="Number of bag members (default 10).")
@click.option("--hidden", "hidden_size", type=click.IntRange(1, 4096), help="LSTM hidden size (default 32).")
@click.option("--layers", "num_layers", type=click.IntRange(1, 16), help="LSTM layers per member (default 1).")
@click.option("--bidirectional/--unidirectional", default=None, help="Direction of every LSTM layer (default unidirectional).")
@click.option("--epochs", "max_epochs", type=click.IntRange(1),
              help="Maximum epochs per member (default 60; each member stops early on its out-of-bag loss).")
@click.option("--batch-size", type=click.IntRange(1), help="Training mini-batch size (default 32).")
@click.option("--seed", "random_state", type=int, default=0, show_default=True, help="Seed: same seed, same bag.")
@click.option("--jobs", "n_jobs", type=click.IntRange(1), help="Train members in this many processes, one torch thread each (default 1: one process, torch's threads).")
@click.option("--backend", type=click.Choice(["local", "ray"]), default=None,
              help="Where members train: this machine (default) or a Ray cluster (pip install 'bagcompile[ray]').")
@click.option("--address", "ray_address", default=None,
              help="Ray cluster address for --backend ray (default: start a local Ray instance).")
@click.option("--task", type=click.Choice(["classification", "regression"]),
              help="NPZ: what 'y' holds (default: integer, boolean or string labels -> classification, floats -> regression).")
@click.option("--target", help="CSV forecasting: the column to forecast.")
@click.option("--sequence-column", help="CSV classification: the column whose value groups rows into sequences.")
@click.option("--label-column", help="CSV classification: the column holding each sequence's class.")
@click.option("--features", callback=lambda ctx, param, value: _column_list(value), metavar="COLS",
              help="CSV: comma list of columns. Forecasting: the columns the members read (default: "
                   "the target only; the model still takes every column). Classification: the "
                   "columns the model takes (default: all but the sequence and label columns).")
@click.option("--input-length", type=click.IntRange(1), help="Forecasting (etth1 or a CSV): steps the model reads (default 96).")
@click.option("--horizon", type=click.IntRange(1), help="Forecasting: steps to forecast (default 24).")
@click.option("--stride", type=click.IntRange(1),
              help="Forecasting: step between training windows (default 1 for a CSV, 4 for etth1).")
def train(source, run_dir, task, target, sequence_column, label_column, features, input_length, horizon,
          stride, **params):
    """Train a bag on SOURCE: a bundled data set (japanese_vowels, etth1), a CSV or an NPZ file.

    \b
    Forecasting CSV (--target COL): one multivariate series, header row, a leading date
      column skipped; split in time order 70/10/20 into train/validation/test; windows of
      --input-length steps forecast the next --horizon values of COL. The members read COL
      (level-free: relative to each window's last value) unless --features names more.
    Classification CSV (--sequence-column ID --label-column LABEL): one row per time step,
      rows of a sequence contiguous, every other column a feature; each class's sequences are
      split 70/10/20 in file order (earliest to training, latest to test).
    NPZ (numpy.savez): arrays x (rows, time, features) and y (labels, or targets (rows,) or
      (rows, K)); optional lengths, spans (rows, 2: forecasting windows' time steps, for the
      block bootstrap), feature_names, target_names. Rows split 70/10/20 in order (per class).

    Scores on the held-out parts are printed and saved with the run.
    """
    from .workflow import train_recipe

    window = {"input_length": input_length, "horizon": horizon, "stride": stride}
    recipe = _recipe(source, task, target, sequence_column, label_column, features, window)
    progress = _Progress()
    try:
        est = _run_friendly(train_recipe, recipe, run_dir, progress=progress, **params)
    finally:
        progress.close()
    click.echo(f"trained {len(est.bag_.members)} members on {recipe.name}; run saved to {run_dir}")
    click.echo(json.dumps(est.bag_.scores, indent=1))


def _recipe(source, task, target, sequence_column, label_column, features, window):
    from . import recipes

    classify = sequence_column is not None or label_column is not None
    given = [f"--{name.replace('_', '-')}" for name, value in window.items() if value is not None]
    if source.lower().endswith(".npz") and Path(source).is_file():
        csv_only = [o for o, v in (("--target", target), ("--sequence-column", sequence_column),
                                   ("--label-column", label_column), ("--features", features)) if v] + given
        if csv_only:
            raise InputError(f"{'/'.join(csv_only)} is for CSV sources; an NPZ holds its arrays "
                             "ready (x, y, and optional lengths, spans)")
        return _run_friendly(recipes.npz_arrays, source, task)
    if task is not None:
        raise InputError("--task is for NPZ sources (bundled sets and CSVs know their task)")
    if source in recipes.BUNDLED:
        if target or classify or (features and source != "etth1"):
            option = "--target" if target else "--features" if not classify else "--sequence-column/--label-column"
            raise InputError(f"{option} is for CSV sources; {source} has its own target")
        if given and source != "etth1":
            raise InputError(f"{'/'.join(given)} is for forecasting (etth1 or a CSV with --target); "
                             f"{source} is a classification data set")
        windowing = {k: v for k, v in window.items() if v is not None}
        return _run_friendly(recipes.BUNDLED[source], **windowing, **({"features": features} if features else {}))
    if not Path(source).is_file():
        raise InputError(f"SOURCE {source!r} is neither a bundled data set "
                         f"({', '.join(recipes.BUNDLED)}) nor an existing CSV or NPZ file")
    if classify:
        if target:
            raise InputError("use --target (forecasting) or --sequence-column with --label-column "
                             "(classification), not both")
        if sequence_column is None or label_column is None:
            raise InputError("CSV classification needs both --sequence-column and --label-column")
        if given:
            raise InputError(f"{'/'.join(given)} is for forecasting (--target); classification reads "
                             "whole sequences")
        return _run_friendly(recipes.csv_classification, source, sequence_column, label_column, features)
    if not target:
        raise InputError("a CSV needs --target COLUMN (forecasting) or --sequence-column ID "
                         "--label-column LABEL (classification)")
    return _run_friendly(recipes.csv_forecast, source, target, window["input_length"] or 96,
                         window["horizon"] or 24, window["stride"] or 1, features)


def _column_list(value):
    if value is None:
        return None
    names = [c.strip() for c in value.split(",")]
    if not all(names):
        raise click.BadParameter(f"expected a comma list of column names, got {value!r}", param_hint="--features")
    return names


def _run_friendly(fn, *args, **kwargs):
    return friendly_errors(fn)(*args, **kwargs)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .onnx file to write (atomically, only after verification passes).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17; 14 to the newest onnx knows).")
@click.option("--member-outputs", is_flag=True, help="Also output every member's result ('members').")
@click.option("--weights", "member_weights", type=click.Choice(["uniform", "oob"]), default="uniform",
              show_default=True, help="Member weights: equal, or from each member's out-of-bag score.")
@click.option("--nonfinite", type=click.Choice(["propagate", "drop"]), default="propagate", show_default=True,
              help="A member giving NaN/Inf on a row: let it through, or leave that member out of the row.")
@click.option("--variants", callback=lambda ctx, param, value: _variants(value), metavar="LIST",
              help="Also write precision/format variants beside the output: a comma list of fp16 "
                   "(NAME.fp16.onnx), int8 (NAME.int8.onnx, dynamic quantization), ort (NAME.ort).")
@friendly_errors
def export(run_dir, output, opset, member_outputs, member_weights, nonfinite, variants):
    """Compile a trained run into one ONNX file, verified against the PyTorch bag.

    The graph is run in onnxruntime on held-out rows (as saved, re-padded with garbage, and with
    ragged lengths) and compared with PyTorch; above 1e-4 absolute nothing is written.
    """
    from .atomic import is_stream
    from .compiler import DEFAULT_OPSET
    from .workflow import export_run

    to_stream = is_stream(output)  # -o /dev/stdout: the model's bytes go there, the summary to stderr
    if variants and to_stream:
        raise InputError(f"--variants writes files beside the output; {output} is not a regular file")
    result = export_run(run_dir, output, member_weights=member_weights, nonfinite=nonfinite,
                        opset=opset or DEFAULT_OPSET, member_outputs=member_outputs)
    worst = max(r.max_abs_diff for r in result.parity)
    click.echo(f"wrote {output} ({result.size_bytes / 1024:.0f} KiB, {result.n_nodes} nodes, opset "
               f"{result.opset}); max |onnx - torch| = {worst:.2e} over {sum(r.n_rows for r in result.parity)} rows",
               err=to_stream)
    if variants:
        from .compiler.variants import describe_report, load_verify_rows, write_variants

        for variant, path, report in write_variants(output, variants, *load_verify_rows(run_dir)):
            click.echo(describe_report(variant, path, report))


def _variants(value):
    if not value:
        return ()
    from .compiler.variants import parse_variants  # imports torch only when the option is used

    try:
        return parse_variants(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--variants") from None


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV to write (atomically).")
@click.option("--sequence-column", help="CSV: column whose value groups rows into sequences.")
@click.option("--window", type=click.IntRange(1), help="CSV: slide windows of this many rows over the file.")
@click.option("--providers", default="auto", show_default=True,
              help="auto (CUDA if it really starts, else CPU with a warning), cpu, cuda (fail "
                   "without CUDA), or an onnxruntime provider name.")
@click.option("--chunk-size", type=click.IntRange(1), default=1024, show_default=True,
              help="Sequences scored at a time; memory is bounded by the chunk, not the file.")
@click.option("--allow-nonfinite", is_flag=True,
              help="Score rows with NaN/Inf inputs (their outputs are NaN) instead of stopping.")
@friendly_errors
def predict(model, input_path, output, sequence_column, window, providers, chunk_size, allow_nonfinite):
    """Run MODEL on INPUT (NPZ or CSV) and write predictions as CSV.

    \b
    NPZ: array 'x' (batch, time, features) and optional 'lengths' (batch,);
         without 'lengths' every row is taken as full length (padding included).
         'x' is read from the archive --chunk-size rows at a time (a Fortran-ordered
         'x', from np.asfortranarray, is read whole).
    CSV: one row per time step with the model's feature columns (extra columns are ignored).
         --sequence-column groups rows into sequences; --window N makes one sequence per
         window of N consecutive rows; otherwise the whole file is one sequence.
         The CSV is streamed: rows of one sequence must be contiguous.

    \b
    Output: one row per sequence; 'id' is the NPZ row, the --sequence-column value, the
    0-based data row a --window ends on, or 0 for a whole-file sequence. Classification:
    label and p_CLASS columns; regression: each target and its members' std (TARGET_std).
    With --allow-nonfinite, a row with NaN/Inf input gets NaN values and an empty label.
    """
    from bagcompile_runtime import EnsembleSession

    from .atomic import is_stream
    from .predict_io import iter_chunks, predict_to_csv

    from bagcompile_runtime import InvalidInputError

    session = EnsembleSession(model, providers=providers, allow_nonfinite=allow_nonfinite)
    chunks = iter_chunks(input_path, session.feature_names, sequence_column, window, chunk_size,
                         allow_nonfinite)
    progress = _Progress()
    try:
        total = predict_to_csv(session, chunks, output,
                               on_chunk=lambda n: progress(f"{n} sequences scored", n, None))
    except InvalidInputError as error:  # the runtime's advice names its keyword; give the flag
        raise click.ClickException(str(error).replace("allow_nonfinite=True", "--allow-nonfinite")) from None
    finally:
        progress.close()
    click.echo(f"wrote {total} predictions to {output} (providers: {', '.join(session.providers)})",
               err=is_stream(output))  # -o /dev/stdout: keep the CSV clean


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@friendly_errors
def inspect(model):
    """Show a bagcompile ONNX file: inputs, outputs, opset, members, metadata, size."""
    from .inspection import describe

    click.echo(describe(model))


@cli.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch", "batches", type=click.IntRange(1), multiple=True, default=(1, 256), show_default=True,
              help="Rows per call; repeat the option for several sizes.")
@click.option("--length", type=click.IntRange(1), default=None, help="Sequence length (default: the model's input length, or 50).")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime intra-op threads (default: onnxruntime's, one per core).")
@click.option("--repeats", type=click.IntRange(3), default=30, show_default=True)
@click.option("--providers", default="cpu", show_default=True,
              help="cpu, cuda (fail without CUDA), auto, or an onnxruntime provider name.")
@friendly_errors
def bench(models, batches, length, threads, repeats, providers):
    """Median latency of each MODEL in the runtime, per batch size (random inputs of the right shape).

    Give several files to compare them side by side, e.g. a model and its variants:

        bagcompile bench m.onnx m.int8.onnx --batch 1 --batch 256

    Every repeat calls each model once, in turn, so machine noise falls on all of them alike;
    'vs first' is how many times faster than the first MODEL each one is.
    """
    from .inspection import benchmark

    for row in benchmark(models, batches, length, threads, repeats, providers=providers):
        click.echo(row)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/reference"),
              show_default=True, help="Where the .onnx files and metrics.json go (use 'exported' to refresh the reference files).")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/runs"),
              show_default=True, help="Where the training runs go.")
@click.option("--members", "n_members", type=click.IntRange(1), default=None, help="Members per bag (default 10).")
@click.option("--jobs", "n_jobs", type=click.IntRange(1), default=2, show_default=True,
              help="Worker processes training members (one torch thread each).")
@friendly_errors
def reproduce(out_dir, runs_dir, n_members, n_jobs):
    """The main job: train both bundled data sets, export, predict with the runtime, print metrics.

    Exits non-zero if a target is missed (accuracy, beating persistence, parity).
    """
    from .reproduce import run_main_job

    progress = _Progress()
    try:
        ok = run_main_job(out_dir, runs_dir, progress=progress, n_members=n_members, n_jobs=n_jobs)
    finally:
        progress.close()
    if not ok:
        raise click.ClickException("one or more targets were missed (see the table above)")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the report files (default: RUN_DIR/report).")
@friendly_errors
def report(run_dir, out_dir):
    """Write a training report for RUN_DIR: PNG figures and one HTML page.

    Learning curves per member, error against the number of members (out-of-bag, validation,
    test) and, for forecasting, the test period with the ensemble mean and its spread. The data
    are rebuilt from the run's source.json. Needs matplotlib: pip install 'bagcompile[report]'.
    """
    from .report import write_report

    for path in write_report(run_dir, out_dir=out_dir):
        click.echo(str(path))


def main():
    # SIGTERM (kill, a job scheduler's timeout) unwinds like Ctrl-C, so temporary files are
    # removed and finished members are kept, instead of the process vanishing mid-write.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cli(prog_name="bagcompile")


if __name__ == "__main__":
    main()
