"""Build the generated ALFWorld panels (and optionally export their games in ALFWorld's layout).

    python scripts/generate_alfworld.py                      # train / valid / test panels
    python scripts/generate_alfworld.py --export data/alfworld --splits valid,test

Panels are cached under the creditgym cache (``$CREDITGYM_CACHE``); every game is solved by the
expert while its panel is built. ``--export DIR`` writes the games as
``DIR/json_2.1.1/<split>/<task>/<trial>/{game.tw-pddl,traj_data.json}``, which alfworld's own
`AlfredTWEnv` plays and which ``ALFWORLD_DATA=DIR`` makes `creditgym/ALFWorld-v0` read.
Prints one JSON line: seconds per split, panel sizes, exported game count.
"""

from __future__ import annotations

import argparse
import json
import time

from creditgym.envs.alfworld.env import PANEL_SIZES, build_panels, export_games, generated_panel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--splits", default="train,valid,test", help="comma list of splits")
    parser.add_argument("--export", default=None, help="folder to write the games into")
    args = parser.parse_args()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in PANEL_SIZES]
    if bad:
        parser.error(f"unknown splits {bad}; choose from {list(PANEL_SIZES)}")
    seconds = build_panels({s: PANEL_SIZES[s] for s in splits})
    result = {"panel_seconds": seconds, "sizes": {s: len(generated_panel(s)) for s in splits}}
    if args.export:
        start = time.perf_counter()
        result["exported"] = sum(len(export_games(s, args.export)) for s in splits)
        result["export_seconds"] = time.perf_counter() - start
    print(json.dumps(result))


if __name__ == "__main__":
    main()
