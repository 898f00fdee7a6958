"""``edgeport run recipe.toml``: compression steps in order, with the accuracy guard after each one."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run a compression recipe (prune, distill, lowrank, cluster, export) with an accuracy guard",
        description=__doc__,
        epilog="Exit codes: 0 every step passed; 2 the recipe is invalid (nothing ran); 3 a step broke the guard "
        "(the run stopped there; earlier artifacts are kept).",
    )
    parser.add_argument("recipe", help="a .toml recipe (see examples/recipes/)")
    parser.add_argument("--check", action="store_true", help="validate the recipe and exit without running it")
    parser.add_argument("--quiet", action="store_true", help="no progress and no 'edgeport: warning:' lines on stderr")
    parser.add_argument("--verbose", action="store_true", help="Keras training progress on stderr")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..progress import Progress
    from ..recipe import load_recipe, run_recipe

    recipe = load_recipe(args.recipe)
    if args.check:
        print(f"{recipe.path.name}: valid, {len(recipe.steps)} steps: " + " -> ".join(s.kind for s in recipe.steps))
        return 0
    progress = Progress(enabled=not args.quiet)
    result = run_recipe(recipe, progress=progress, verbose=args.verbose)
    progress.warnings(_export_warnings(result))
    print(result.summary())
    print(f"report: {recipe.output_dir / 'recipe_report.json'}")
    if result.stopped_at:
        print(f"edgeport: error: {result.message}", file=sys.stderr)
    return result.exit_code


def _export_warnings(result) -> list[str]:
    """The warnings of the reports each export step wrote, prefixed with the step (e.g. ``03_export: cortex-m4: ...``)."""
    from ..report.terminal import warning_lines

    lines = []
    for step in result.steps:
        if step.kind == "export":
            per_target = {target: entry.get("warnings") or [] for target, entry in step.detail.items()}
            lines += [f"{step.step}: {line}" for line in warning_lines(per_target)]
    return lines
