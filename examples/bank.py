"""A bank account as a decider: the domain of the web app's command endpoints, the
demo and the concurrency tests.

Pure functions only: ``evolve`` folds events into an :class:`Account`, and each command
(``open_account``, ``deposit``, ``withdraw``) returns a ``decide(state) -> events``
function that refuses with a :class:`Refused` (no overdraft, no double open).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventstore_async import Aggregate, Decider, applies

__all__ = [
    "EVENT_TYPES",
    "Account",
    "AccountAggregate",
    "Deposited",
    "Opened",
    "Refused",
    "Withdrawn",
    "account_decider",
    "deposit",
    "evolve",
    "open_account",
    "withdraw",
]


class Opened(msgspec.Struct, tag="bank.opened", frozen=True):
    owner: str


class Deposited(msgspec.Struct, tag="bank.deposited", frozen=True):
    amount: int


class Withdrawn(msgspec.Struct, tag="bank.withdrawn", frozen=True):
    amount: int


Event = Opened | Deposited | Withdrawn
EVENT_TYPES: tuple[type[msgspec.Struct], ...] = (Opened, Deposited, Withdrawn)


class Account(msgspec.Struct, frozen=True, tag="bank.account"):
    """The state: also what a snapshot stores."""

    owner: str | None = None
    balance: int = 0


class Refused(Exception):
    """A domain refusal (the web app answers 422)."""


def evolve(account: Account, event: Event) -> Account:
    if isinstance(event, Opened):
        return Account(owner=event.owner, balance=0)
    if isinstance(event, Deposited):
        return Account(owner=account.owner, balance=account.balance + event.amount)
    if isinstance(event, Withdrawn):
        return Account(owner=account.owner, balance=account.balance - event.amount)
    raise TypeError(f"an account has no event {type(event).__name__}")


def account_decider(*, cache_size: int = 0, snapshot_every: int | None = None) -> Decider[Account]:
    return Decider(
        Account,
        evolve,
        aggregate_type="account",
        cache_size=cache_size,
        snapshot_every=snapshot_every,
    )


Decide = Callable[[Account], list[Event]]


def open_account(owner: str) -> Decide:
    def decide(account: Account) -> list[Event]:
        if account.owner is not None:
            raise Refused("the account is already open")
        return [Opened(owner=owner)]

    return decide


def deposit(amount: int) -> Decide:
    def decide(account: Account) -> list[Event]:
        _check_amount(account, amount)
        return [Deposited(amount=amount)]

    return decide


def withdraw(amount: int) -> Decide:
    def decide(account: Account) -> list[Event]:
        _check_amount(account, amount)
        if account.balance < amount:
            raise Refused(f"overdraft: the balance is {account.balance}, {amount} asked")
        return [Withdrawn(amount=amount)]

    return decide


def _check_amount(account: Account, amount: int) -> None:
    if account.owner is None:
        raise Refused("no such account")
    if amount <= 0:
        raise Refused("the amount must be positive")


class AccountAggregate(Aggregate):
    """The same account in the class-based style: methods check and record events,
    handlers (by decorator or by the name ``on_<Event>``) change the attributes."""

    aggregate_type = "account"

    def __init__(self) -> None:
        super().__init__()
        self.owner: str | None = None
        self.balance = 0

    def open(self, owner: str) -> None:
        if self.owner is not None:
            raise Refused("the account is already open")
        self.record(Opened(owner=owner))

    def deposit(self, amount: int) -> None:
        _check_amount(Account(owner=self.owner, balance=self.balance), amount)
        self.record(Deposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        _check_amount(Account(owner=self.owner, balance=self.balance), amount)
        if self.balance < amount:
            raise Refused(f"overdraft: the balance is {self.balance}, {amount} asked")
        self.record(Withdrawn(amount=amount))

    @applies(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    def on_Withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount
