"""`tsnpipe fuse`: late fusion of score files.

It works on score files only; it needs no work folder, manifests or runner. numpy, pandas and
matplotlib are imported inside the functions so that `tsnpipe --help` stays quick.
"""

from __future__ import annotations

from pathlib import Path

import click

SEARCH_OPTION = "--search-weights"


class WeightsType(click.ParamType):
    """`1:1.5` or `0.5:0.5:1`: one non-negative weight per score file, in the files' order."""

    name = "W1:W2[:...]"

    def convert(self, value, param, ctx):
        from tsnpipe.stages.scores.fuse import FusionError, parse_weights

        if isinstance(value, tuple):
            return value
        try:
            return parse_weights(str(value))
        except FusionError as error:
            self.fail(str(error), param, ctx)


class FuseCommand(click.Command):
    """Lets `--search-weights` take several files in a row (`--search-weights v_rgb.pkl v_flow.pkl`).

    Click options take a fixed number of values, so the files after the option, up to the next option,
    are rewritten as one `--search-weights FILE` each before Click parses them.
    """

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, spread_search_weights(args))


def spread_search_weights(args: list[str]) -> list[str]:
    spread, taking, taken = [], False, 0
    for token in args:
        if token == SEARCH_OPTION:
            taking, taken = True, 0
            continue
        if taking and not token.startswith("-"):
            spread += [SEARCH_OPTION, token]
            taken += 1
            continue
        if taking and taken == 0:
            raise click.UsageError(f"{SEARCH_OPTION} needs the validation score files, one per stream.")
        taking = False
        spread.append(token)
    if taking and taken == 0:
        raise click.UsageError(f"{SEARCH_OPTION} needs the validation score files, one per stream.")
    return spread


existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("fuse", cls=FuseCommand)
@click.argument("scores", nargs=-1, required=True, type=existing_file)
@click.option("--weights", type=WeightsType(), default=None,
              help="One weight per score file, e.g. 1:1.5 (RGB:flow, the paper's choice). Default: all 1.")
@click.option("--softmax", is_flag=True,
              help="Fuse class probabilities (softmax of each file's scores) instead of raw scores.")
@click.option(SEARCH_OPTION, "search_weights", multiple=True, type=existing_file, metavar="VAL.pkl ...",
              help="Validation score files, one per stream in the same order: pick the weights with the best "
                   "mean class accuracy on them (grid 0..4 relative to the first file). Must share no video "
                   "with the score files.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the fused scores here, as a score file (weights and inputs recorded).")
def fuse(scores, weights, softmax, search_weights, out):
    """Fuse the class scores of several streams (e.g. rgb.pkl flow.pkl) and print their accuracies.

    Files are joined by video id, so their row order does not matter; they must score the same videos,
    with the same labels and class list. The fusion is a weighted sum of raw scores (the TSN paper:
    RGB:flow 1:1.5), or of probabilities with --softmax.

    \b
    Examples:
      tsnpipe fuse rgb.pkl flow.pkl --weights 1:1.5 --out fused.pkl
      tsnpipe fuse rgb.pkl flow.pkl --search-weights val_rgb.pkl val_flow.pkl
    """
    from tsnpipe.stages.scores.fuse import accuracy_table, format_weights, fuse_files
    from tsnpipe.stages.scores.outputs import check_writable

    if weights is not None and search_weights:
        raise click.UsageError("Give either --weights or --search-weights, not both.")
    if out is not None:
        check_writable(out)
    result = fuse_files(list(scores), weights=weights, softmax=softmax,
                        validation_paths=list(search_weights) or None, output=out)
    fused = result.fused
    kind = "probabilities (softmax)" if softmax else "raw scores"
    if result.searched:
        how = (f"searched on {', '.join(str(p) for p in search_weights)}: best mean class accuracy "
               f"{100 * result.validation['mean_class']:.2f}% there")
    else:
        how = "given" if weights is not None else "equal, the default"
    click.echo(f"fuse: {len(scores)} score files, {len(fused['video_ids']):,} videos, "
               f"{len(fused['class_names'])} classes; {kind}; weights {format_weights(result.weights)} ({how})")
    click.echo(accuracy_table(result.rows))
    if out is not None:
        click.echo(f"wrote {out}")
