"""``POST /api/connections/{id}/stock``: update-inventory-stock for the host app, answered per row."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from .. import stock
from ..errors import InputError
from ..keeper import Keeper
from ..views import StockAnswerView
from .api import ConnectionId
from .errors import ApiError, ErrorBody


class StockUpdateIn(BaseModel):
    item_id: int = Field(ge=1, le=2**63 - 1)
    qoh: int = Field(ge=0, le=2**31 - 1, description="Quantity on hand to set (not negative).")
    shop_id: int | None = Field(None, ge=1, le=2**63 - 1)
    item_shop_id: int | None = Field(None, ge=1, le=2**63 - 1)


class StockIn(BaseModel):
    updates: list[StockUpdateIn] = Field(min_length=1, max_length=10_000)


def router(keeper: Keeper, auth: Any) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["api"], dependencies=[auth])
    problems: dict[int | str, dict[str, Any]] = {
        400: {
            "model": ErrorBody,
            "description": "`stock_unsupported`: the connection's provider has no stock API here (X-Series: use "
            "the proxy); nothing was sent",
        },
        404: {"model": ErrorBody, "description": "`connection_not_found`"},
        409: {"model": ErrorBody, "description": "`connection_expired`"},
        422: {"model": ErrorBody, "description": "`validation_error`: nothing was sent"},
    }

    @api.post("/connections/{connection_id}/stock", response_model=StockAnswerView, responses=problems)
    def update_stock(connection_id: ConnectionId, body: StockIn) -> StockAnswerView:
        """Set stock for each row, in order; a failed row says why and the others go on."""
        try:
            updates = stock.from_json(row.model_dump() for row in body.updates)
        except InputError as exc:
            raise ApiError(422, "validation_error", str(exc)) from None
        keeper.check_stock(connection_id)  # an X-Series store: 400 stock_unsupported, nothing sent
        keeper.fresh_token(connection_id)  # unknown or expired: a clear error before anything is sent
        with keeper.lightspeed(connection_id) as client:
            result = stock.send(client, updates)
        return StockAnswerView.model_validate(result)

    return api


__all__ = ["router"]
