"""Reports printed for a person: rich tables in a terminal, plain uncut lines when piped."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from okc.reports.catalog import Listing, kinds, list_components
from okc.reports.summary import ValueSummary


def _console():
    from rich.console import Console

    return Console(highlight=False, markup=False, soft_wrap=not sys.stdout.isatty())


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def print_summary(rows: Sequence[ValueSummary], *, seconds: float, steps: int, epochs: int) -> None:
    """The end of ``okc fit``: best and last of each loss and metric, and the time taken."""
    from rich.table import Table

    table = Table(title=f"{epochs} epochs, {steps} steps in {seconds:.1f} s", title_justify="left")
    for column in ("value", "last", "best", "at step"):
        table.add_column(column, justify="left" if column == "value" else "right")
    for row in rows:
        best = f"{_num(row.best)} ({row.mode})" if row.best is not None else ""
        step = "" if row.best_step is None else str(row.best_step)
        table.add_row(row.key, _num(row.last), best, step)
    _console().print(table)


def print_listing(listing: Listing) -> None:
    """``okc list KIND [PATTERN]``."""
    console = _console()
    rows = listing.components
    if sys.stdout.isatty():
        from rich.table import Table

        table = Table("name", "description", "params", title=listing.kind, title_justify="left")
        for c in rows:
            about = c.description if c.source == "okc" else f"({c.source}) {c.description}"
            table.add_row(c.name, about.strip(), ", ".join(c.params))
        console.print(table)
    else:
        for c in rows:
            source = "" if c.source == "okc" else f"  [{c.source}]"
            console.print(f"{c.name}{source}" + (f"  {c.description}" if c.description else ""))
            if c.params:
                console.print(f"    params: {', '.join(c.params)}")
    if not rows:
        console.print(f"no {listing.kind} match")
    if not listing.library_listed:
        for source, count in listing.libraries.items():
            console.print(f"also: any {source} name ({count}); give a pattern "
                          f"(okc list {listing.kind} 'x*') or --all to list them")  # fmt: skip


def print_kinds() -> None:
    """``okc list``: each kind, how many okc components it has and which library it reaches."""
    from rich.table import Table

    title = "okc list KIND [PATTERN]"
    table = Table("kind", "okc's own", "also", title=title, title_justify="left")
    for kind in kinds():
        listing = list_components(kind)
        also = ", ".join(f"{s} ({n})" for s, n in listing.libraries.items())
        table.add_row(kind, str(len(listing.components)), also)
    _console().print(table)
