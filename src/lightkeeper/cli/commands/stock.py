"""``update-stock``: the guide's update-inventory-stock, for one item or a CSV batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import context
from ..output import err, out, print_json
from .configure import JsonFlag

if TYPE_CHECKING:
    from ...stock import BatchResult, RowResult, StockUpdate


def update_stock(  # noqa: PLR0917 (Typer maps each parameter to an option)
    connection: Annotated[int, typer.Option("--connection", help="The connection (see `lightkeeper status`).")],
    item: Annotated[int | None, typer.Option("--item", help="Item ID.")] = None,
    shop: Annotated[int | None, typer.Option("--shop", help="Shop ID.")] = None,
    item_shop: Annotated[int | None, typer.Option("--item-shop", help="ItemShop ID (instead of --shop).")] = None,
    qoh: Annotated[int | None, typer.Option("--qoh", help="Quantity on hand to set.")] = None,
    from_csv: Annotated[Path | None, typer.Option("--from-csv", help="CSV with item_id,shop_id,qoh.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set stock in Lightspeed: one item, or every row of a CSV (checked whole before sending)."""
    from ... import stock

    updates = _read(from_csv) if from_csv else [_single(item, qoh, shop, item_shop)]
    with context.keeper() as keeper:
        keeper.check_stock(connection)  # an X-Series store: exit 2, nothing sent
        keeper.fresh_token(connection)  # unknown or expired connection: one clear error, nothing sent
        with keeper.lightspeed(connection) as client, _progress(len(updates), show=not as_json) as advance:
            result = stock.send(client, updates, progress=advance)
    _report(result, as_json)
    if result.failed:
        raise typer.Exit(1)


def _read(path: Path) -> list[StockUpdate]:
    from ... import stock
    from ...errors import InputError

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start + 1})") from None
    return list(stock.parse_csv(text))


def _single(item: int | None, qoh: int | None, shop: int | None, item_shop: int | None) -> StockUpdate:
    from ... import stock

    if item is None or qoh is None:
        raise typer.BadParameter("give --item and --qoh (and --shop or --item-shop), or --from-csv FILE")
    return stock.single(item, qoh, shop_id=shop, item_shop_id=item_shop)


class _progress:
    def __init__(self, total: int, *, show: bool) -> None:
        self.total, self.show = total, show and total > 1
        self.bar = Progress(
            TextColumn("updating stock"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        )

    def __enter__(self) -> Callable[[RowResult], None]:
        if not self.show:
            return lambda _row: None
        self.bar.start()
        task = self.bar.add_task("stock", total=self.total)
        return lambda _row: self.bar.advance(task)

    def __exit__(self, *_exc: object) -> None:
        if self.show:
            self.bar.stop()


def _report(result: BatchResult, as_json: bool) -> None:
    from ...views import StockView

    view = StockView.model_validate(result)
    if as_json:
        print_json(view.document())
        return
    colour = "green" if view.failed == 0 else "yellow"
    out.print(f"[{colour}]{view.done} of {view.total} stock updates done, {view.failed} failed[/]")
    for row in view.rows:
        if row.status != "done":
            out.print(f"  line {row.line} (item {row.item_id}): {row.status}: {row.error}", markup=False)
    if result.stopped:
        out.print(result.stopped, markup=False)


def register(app: typer.Typer) -> None:
    app.command("update-stock")(update_stock)
