"""Export a run's trajectory dump as a dataset: Parquet or JSON Lines, one file per iteration.

    python scripts/export_trajectories.py runs/demo --format parquet --out runs/demo/dataset

Reads ``RUN_DIR/trajectories/iter_*.jsonl`` (or the dump files named directly) with
`creditgym.trainers.dump.read_rows`, so the columns are the dump schema's fields (its docstring is
the reference; schema-1 dumps come back with schema-2 names). Object-valued fields (``info``,
``extras``, ``episode_info``, ``spans``, ``values``, ``span_advantages``) hold different keys
from env to env and step to step, so they are written as JSON text; every other field keeps its
type. ``OUT/README.md`` lists the columns. Load the result with

    datasets.load_dataset("parquet", data_files="OUT/*.parquet")   # or "json" for --format jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from creditgym.trainers.dump import FIELDS, read_rows

#: Fields whose values are JSON objects of varying shape: exported as JSON text.
JSON_FIELDS = ("episode_info", "info", "extras", "spans", "values", "span_advantages")
#: Scalar float fields (a value that happens to be integral must not make the column int).
FLOAT_FIELDS = (
    "reward",
    "advantage",
    "advantage_weight",
    "reference_advantage",
    "answer_logprob_before",
    "answer_logprob_after",
)


def dump_files(paths: list[Path]) -> list[Path]:
    """The dump files named by `paths` (run folders, trajectories folders or .jsonl files)."""
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
            continue
        folder = path / "trajectories" if (path / "trajectories").is_dir() else path
        found = sorted(folder.glob("iter_*.jsonl"))
        if not found:
            raise FileNotFoundError(f"no trajectory dump (iter_*.jsonl) in {folder}")
        files += found
    return files


def flat_row(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """`row` with every column present and the object-valued fields as JSON text."""
    out = {}
    for name in columns:
        value = row.get(name)
        if name in JSON_FIELDS and value is not None:
            value = json.dumps(value, sort_keys=True)
        out[name] = value
    return out


def write(rows: list[dict[str, Any]], columns: list[str], path: Path, fmt: str) -> None:
    flat = [flat_row(r, columns) for r in rows]
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in flat:
                fh.write(json.dumps(row) + "\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(flat, schema=_arrow_schema(flat, columns))
    metadata = {b"creditgym.json_fields": json.dumps(JSON_FIELDS).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def _arrow_schema(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    """Column types inferred over all rows (a column null in every row is a string column)."""
    import pyarrow as pa

    fields = []
    for name in columns:
        values = [r[name] for r in rows if r[name] is not None]
        if name in JSON_FIELDS or not values:
            kind = pa.string()
        elif name in FLOAT_FIELDS:
            kind = pa.float64()
        else:
            kind = pa.array(values).type
            if pa.types.is_integer(kind) and any(isinstance(v, float) for v in values):
                kind = pa.float64()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or dump files")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        files = dump_files(args.paths)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for file in files:
        rows = read_rows(file)
        extra = sorted({k for r in rows for k in r} - set(FIELDS))
        columns = [*FIELDS, *extra]
        target = args.out / f"{file.stem}.{args.format}"
        write(rows, columns, target, args.format)
        total += len(rows)
        print(f"{file} -> {target} ({len(rows)} steps)")
    (args.out / "README.md").write_text(
        "# creditgym trajectories\n\nOne row per step, in the trajectory dump schema "
        "(`creditgym.trainers.dump`). Columns holding JSON text: "
        + ", ".join(f"`{f}`" for f in JSON_FIELDS)
        + f".\n\nFiles: {len(files)}, steps: {total}, format: {args.format}.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
