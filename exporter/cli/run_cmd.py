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
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
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
    result = run_recipe(recipe, progress=Progress(enabled=not args.quiet), verbose=args.verbose)
    print(result.summary())
    print(f"report: {recipe.output_dir / 'recipe_report.json'}")
    if result.stopped_at:
        print(f"edgeport: error: {result.message}", file=sys.stderr)
    return result.exit_code
