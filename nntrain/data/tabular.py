"""Tables of named columns (CSV files and the small built-in datasets) turned into the arrays
a model's inputs and outputs take: feature subsets per input, targets per output, one-hot
categorical columns, and an explicit policy for missing values."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.errors import DataError


@dataclass
class Table:
    """Numeric columns (NaN where a value is missing) and text columns, by name."""

    names: list[str]
    numeric: dict[str, np.ndarray]
    text: dict[str, np.ndarray]
    source: str
    lines: list[int] | None = None  # each row's line in its file, where it has one

    def __len__(self) -> int:
        column = next(iter(self.numeric.values()), None)
        if column is None:
            column = next(iter(self.text.values()))
        return len(column)

    def take(self, rows: np.ndarray) -> Table:
        return Table(self.names, {k: v[rows] for k, v in self.numeric.items()},
                     {k: v[rows] for k, v in self.text.items()}, self.source,
                     None if self.lines is None else list(np.asarray(self.lines)[rows]))

    def column(self, name: str) -> np.ndarray:
        if name in self.numeric:
            return self.numeric[name]
        raise DataError(f"{self.source}: column '{name}' is not numeric",
                        "list it under data.categorical to one-hot encode it")


# in a column of numbers, cells read as a missing value (pandas' default markers); in a text
# column only an empty cell is missing: "None" or "NA" (North America) may be a category
MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null",
                     "None", "#N/A", "<NA>"})


def read_csv(path: Path, categorical: list[str] | tuple[str, ...] = ()) -> Table:
    """Read a CSV with a header row (Python's csv module); numbers become float32 columns;
    columns that are not numbers, and the `categorical` ones, stay text. Missing values:
    empty cells, and in a column of numbers markers such as `NA` (NaN); in a text column,
    empty cells ('')."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows, starts, line = [], [], 0  # each row's first line (a quoted cell may span
            for row in reader:  # several)
                starts.append(line + 1)
                line = reader.line_num
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}", "expected a UTF-8 CSV file with a header") \
            from None
    if len(rows) < 2:
        raise DataError(f"{path}: no data rows", "expected a header row and at least one row")
    header = [h.strip() for h in rows[0]]
    if not any(header):
        raise DataError(f"{path}: the first line, which names the columns, is empty",
                        "start the file with its header: the column names, comma-separated")
    kept = [i for i, row in enumerate(rows) if i and any(cell.strip() for cell in row)]
    body = [rows[i] for i in kept]  # blank lines skipped; `kept` has their rows' numbers
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        raise DataError(f"{path}: the header names {', '.join(map(repr, repeated))} more than "
                        "once", "give each column its own name")
    bad = [starts[i] for i, row in zip(kept, body, strict=True) if len(row) != len(header)]
    if bad:
        rows_do = "1 row does" if len(bad) == 1 else f"{len(bad)} rows do"
        raise DataError(f"{path}: {rows_do} not have {len(header)} values "
                        f"({'at' if len(bad) == 1 else 'first at'} line {bad[0]})",
                        "give every row a value for each column (an empty cell is a missing "
                        "value: see data.missing); quote values that contain commas")
    numeric, text = {}, {}
    for j, name in enumerate(header):
        cells = [row[j].strip() for row in body]
        if not name:  # a trailing comma's empty column is nothing; a column of values is
            if any(cells):  # one nobody can name in a config
                raise DataError(f"{path}: column {j + 1} has values but no name in the header",
                                "name every column in the header row")
            continue
        if name in categorical:  # as text: float32 would merge ids such as 16777217 and
            text[name] = _category_cells(cells)  # 16777216
            continue
        try:
            with np.errstate(over="ignore"):  # past float32's range: inf, refused below
                numeric[name] = np.array([math.nan if c in MISSING else _number(c)
                                          for c in cells], np.float32)
        except ValueError:
            text[name] = np.array(cells, dtype=object)
    return Table([h for h in header if h], numeric, text, str(path), [starts[i] for i in kept])


def _number(cell: str) -> float:
    """A cell as a number, as a spreadsheet reads one: not Python's 1_000, nor other
    scripts' digits."""
    if "_" in cell or not cell.isascii():
        raise ValueError(cell)
    return float(cell)


def stray_text(table: Table, name: str) -> str:
    """Where a text column is a column of numbers but for a few cells: the first of them,
    "('1.2.3' at line 50, the other values are numbers)"; else ''."""
    cells = table.text.get(name)
    if cells is None:
        return ""
    words = []
    for i, cell in enumerate(cells):
        if cell in MISSING:
            continue
        try:
            _number(cell)
        except ValueError:
            words.append(i)
            if len(words) * 10 > len(cells):  # text, not a few stray cells
                return ""
    if not words:
        return ""
    where = f"line {table.lines[words[0]]}" if table.lines else f"row {words[0] + 1}"
    others = f" and {len(words) - 1} more" if len(words) > 1 else ""
    return f" ({cells[words[0]]!r} at {where}{others}; the other values are numbers)"


def _category_cells(cells: list[str]) -> np.ndarray:
    """A categorical column's cells: a column of numbers by value, at full precision ('1',
    '1.0' and '01' are one category, 1000001 and 1000002 two), its missing markers ''; any
    other column as written."""
    numbers = []
    for cell in cells:
        if cell in MISSING:
            numbers.append("")
            continue
        try:
            numbers.append(number_text(_number(cell)))
        except ValueError:
            return np.array(cells, dtype=object)
    return np.array(numbers, dtype=object)


def number_text(value: float) -> str:
    """The shortest text that reads back as `value`, without a needless `.0`: 3, 0.1, 1e+20."""
    text = repr(float(value) + 0.0)  # + 0.0: -0.0 is 0
    return text[:-2] if text.endswith(".0") else text


def check_finite(table: Table, names: list[str]) -> None:
    """The columns a model uses hold no infinite number (`inf`, or one past float32's
    3.4e38): it would poison the training, and a `mean` fill."""
    for name in names:
        column = table.numeric.get(name)
        infinite = np.flatnonzero(np.isinf(column)) if column is not None else ()
        if len(infinite):
            line = f"line {table.lines[infinite[0]]}" if table.lines else f"row {infinite[0]}"
            raise DataError(f"{table.source}: column '{name}' has {len(infinite)} infinite "
                            f"values (first at {line}: {float(column[infinite[0]])})",
                            "give finite numbers; an empty cell is a missing value (see "
                            "data.missing)")


def select(names: list[str], spec: str | list[str | int] | None, what: str) -> list[str]:
    """Columns by `"a:b"` index range (Python slice), a list of indices, or a list of names."""
    if spec is None:
        return list(names)
    if isinstance(spec, str):
        match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", spec)
        if match is None:
            if spec in names:
                return [spec]
            raise DataError(f"{what}: '{spec}' is neither a column nor an index range like 0:5")
        start, stop = (int(g) if g else None for g in match.groups())
        chosen = names[slice(start, stop)]
        if not chosen:
            raise DataError(f"{what}: range '{spec}' selects no columns of {len(names)}")
        return chosen
    out = []
    for item in spec:
        if isinstance(item, int):
            if not -len(names) <= item < len(names):
                raise DataError(f"{what}: index {item} is outside 0..{len(names) - 1}")
            out.append(names[item])
        elif item in names:
            out.append(item)
        else:
            raise DataError(f"{what}: no column '{item}'", f"columns: {', '.join(names)}")
    twice = sorted({name for name in out if out.count(name) > 1})
    if twice:
        raise DataError(f"{what}: {', '.join(map(repr, twice))} listed more than once",
                        "list each column once")
    return out


def one_hot_columns(table: Table, categorical: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Categorical columns as 0/1 columns named `column=value`, categories sorted."""
    out: dict[str, np.ndarray] = {}
    categories: dict[str, list[str]] = {}
    for name in categorical:
        values = category_values(table, name)
        levels = sorted(set(values.tolist()) - {""}, key=_level_order)
        categories[name] = levels
        for level in levels:
            out[f"{name}={level}"] = (values == level).astype(np.float32)
    return out, categories


def category_values(table: Table, name: str) -> np.ndarray:
    """A categorical column as strings: numbers without a needless `.0`, missing as ''."""
    if name in table.text:
        return table.text[name]
    column = table.numeric[name]  # a built-in table's float32 numbers, each as it reads
    return np.array(["" if np.isnan(v) else np.format_float_positional(v, trim="-")
                     for v in column], dtype=object)


def _level_order(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), "")  # numeric levels by value: 2 before 10
    except ValueError:
        return (1, 0.0, level)


def missing(table: Table, name: str) -> np.ndarray:
    """Which rows lack a value in the column: NaN numbers, empty text."""
    if name in table.numeric:
        return np.isnan(table.numeric[name])
    return table.text[name] == ""


def missing_counts(table: Table, names: list[str]) -> dict[str, int]:
    counts = {name: int(missing(table, name).sum()) for name in names
              if name in table.numeric or name in table.text}
    return {name: n for name, n in counts.items() if n}
