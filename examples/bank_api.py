"""The web app's command endpoints: a bank account on a repository (examples/bank.py).

::

    POST /accounts/{id}/open      {"owner": "ada", "command_id": "..." (optional)}
    POST /accounts/{id}/deposit   {"amount": 10, "command_id": "..."}
    POST /accounts/{id}/withdraw  {"amount": 4, "command_id": "..."}
        200 {"account": "...", "version": 3, "owner": "ada", "balance": 6}
        422 {"error": "refused", "detail": "overdraft: ..."}     a domain refusal
        409 {"error": "conflict", ...}     still conflicting after max_attempts (3) decides
    POST /transfers  {"from": "a", "to": "b", "amount": 5, "command_id": "..."}
        200 {"from": {...}, "to": {...}}   both accounts in one transaction
    GET /accounts/{id}
        200 {"account": "...", "version": 3, "owner": "ada", "balance": 6}
        404 {"error": "not_found", ...}

A command re-sent with the same ``command_id`` (a client retrying after a timeout)
lands once and answers with the outcome it had, whatever happened since.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventstore_async import EventStore, Outcome, Repository

from .bank import (
    EVENT_TYPES,
    Account,
    Refused,
    account_decider,
    deposit,
    open_account,
    withdraw,
)

__all__ = ["ACCOUNTS", "EXCEPTION_HANDLERS", "ROUTES", "prepare"]

#: One decider for the process: its cache (10,000 accounts) serves every request.
ACCOUNTS = account_decider(cache_size=10_000)


class OpenBody(msgspec.Struct, forbid_unknown_fields=True):
    owner: str
    command_id: str | None = None


class AmountBody(msgspec.Struct, forbid_unknown_fields=True):
    amount: int
    command_id: str | None = None


class TransferBody(msgspec.Struct, forbid_unknown_fields=True, rename={"source": "from"}):
    source: str
    to: str
    amount: int
    command_id: str | None = None


_decode_open = msgspec.json.Decoder(OpenBody).decode
_decode_amount = msgspec.json.Decoder(AmountBody).decode
_decode_transfer = msgspec.json.Decoder(TransferBody).decode
_encode = msgspec.json.Encoder().encode


def prepare(store: EventStore) -> None:
    """Register the account events, so change sets decode back to them."""
    store.register(*EVENT_TYPES)


def _json(status: int, content: Any) -> Response:
    return Response(_encode(content), status, media_type="application/json")


def _account(aggregate_id: str, version: int, state: Account) -> dict[str, Any]:
    return {"account": aggregate_id, "version": version, **msgspec.structs.asdict(state)}


def _repository(request: Request) -> Repository[Account]:
    store: EventStore = request.app.state.store
    return store.repository(ACCOUNTS)


def _answer(aggregate_id: str, outcome: Outcome[Account]) -> Response:
    return _json(200, _account(aggregate_id, outcome.version, outcome.state))


async def open_endpoint(request: Request) -> Response:
    body = _decode_open(await request.body())
    aggregate_id = request.path_params["account"]
    outcome = await _repository(request).execute(
        aggregate_id, open_account(body.owner), command_id=body.command_id
    )
    return _answer(aggregate_id, outcome)


async def deposit_endpoint(request: Request) -> Response:
    return await _amount_command(request, deposit)


async def withdraw_endpoint(request: Request) -> Response:
    return await _amount_command(request, withdraw)


async def _amount_command(request: Request, command: Any) -> Response:
    body = _decode_amount(await request.body())
    aggregate_id = request.path_params["account"]
    outcome = await _repository(request).execute(
        aggregate_id, command(body.amount), command_id=body.command_id
    )
    return _answer(aggregate_id, outcome)


async def transfer_endpoint(request: Request) -> Response:
    body = _decode_transfer(await request.body())
    if body.source == body.to:
        raise Refused("a transfer needs two accounts")
    store: EventStore = request.app.state.store
    outcomes = await store.execute_many(
        {body.source: withdraw(body.amount), body.to: deposit(body.amount)},
        deciders=ACCOUNTS,
        command_id=body.command_id,
    )
    return _json(
        200,
        {
            "from": _account(
                body.source, outcomes[body.source].version, outcomes[body.source].state
            ),
            "to": _account(body.to, outcomes[body.to].version, outcomes[body.to].state),
        },
    )


async def get_endpoint(request: Request) -> Response:
    aggregate_id = request.path_params["account"]
    loaded = await _repository(request).get(aggregate_id)
    if not loaded.version:
        return _json(404, {"error": "not_found", "aggregate_id": aggregate_id})
    return _json(200, _account(aggregate_id, loaded.version, loaded.state))


async def refused(request: Request, exc: Exception) -> Response:
    return _json(422, {"error": "refused", "detail": str(exc)})


ROUTES = [
    Route("/accounts/{account}/open", open_endpoint, methods=["POST"]),
    Route("/accounts/{account}/deposit", deposit_endpoint, methods=["POST"]),
    Route("/accounts/{account}/withdraw", withdraw_endpoint, methods=["POST"]),
    Route("/accounts/{account}", get_endpoint, methods=["GET"]),
    Route("/transfers", transfer_endpoint, methods=["POST"]),
]

EXCEPTION_HANDLERS = {Refused: refused}
