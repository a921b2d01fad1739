"""Commands of one store: its repositories (one per decider) and their turns, and
commands that change several aggregates in one transaction (``execute_many``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ConcurrencyError, IntegrityError, InvalidInputError
from .._models import Append, ChangeSet
from .._validation import check_aggregate_id
from ._cache import Loaded, landed_in
from ._decider import Decider
from ._repository import (
    AlreadyLanded,
    Decision,
    Outcome,
    Repository,
    append_commands,
    check_attempts,
    check_command_id,
    check_decide,
)
from ._turns import Turns

if TYPE_CHECKING:
    from ._access import StoreAccess

__all__ = ["Commands"]

DeciderLike = Decider[Any] | type


class Commands:
    """What ``EventStore.repository`` and ``EventStore.execute_many`` delegate to."""

    def __init__(self, access: StoreAccess) -> None:
        self._access = access
        self._turns = Turns()
        self._repositories: dict[int, tuple[Decider[Any], Repository[Any]]] = {}

    def repository(self, decider: DeciderLike) -> Repository[Any]:
        """The repository of ``decider`` (the same one on every call: its cache lives on)."""
        checked = as_decider(decider, "decider")
        known = self._repositories.get(id(checked))
        if known is not None and known[0] is checked:
            return known[1]
        for state_type in checked.state_types():  # a registration of the user's stands
            self._access.register_state(state_type)
        repository = Repository(self._access, checked, self._turns)
        self._repositories[id(checked)] = (checked, repository)
        return repository

    async def execute_many(
        self,
        decides: Mapping[str, Callable[[Any], Any]],
        deciders: DeciderLike | Mapping[str, DeciderLike],
        command_id: str | None,
        max_attempts: int,
    ) -> dict[str, Outcome[Any]]:
        """See :meth:`EventStore.execute_many`."""
        repositories = self._check_many(decides, deciders)
        command_id = check_command_id(command_id)
        attempts = check_attempts(max_attempts)
        async with self._turns.hold(repositories):
            return await _Batch(repositories, decides, command_id).run(self._access, attempts)

    def _check_many(
        self,
        decides: Any,
        deciders: Any,
    ) -> dict[str, Repository[Any]]:
        if not isinstance(decides, Mapping) or not decides:
            raise InvalidInputError(
                "decides", "must be a non-empty mapping of aggregate id to decide function"
            )
        repositories: dict[str, Repository[Any]] = {}
        for raw_id, decide in decides.items():
            aggregate_id = check_aggregate_id(raw_id, f"decides[{raw_id!r}]")
            check_decide(decide, f"decides[{aggregate_id!r}]")
            if isinstance(deciders, Mapping):
                if aggregate_id not in deciders:
                    raise InvalidInputError("deciders", f"has no decider for {aggregate_id!r}")
                decider = deciders[aggregate_id]
            else:
                decider = deciders
            repositories[aggregate_id] = self.repository(
                as_decider(decider, f"deciders[{aggregate_id!r}]")
            )
        return repositories


class _Batch:
    """One multi-aggregate command: every aggregate decided, then one transaction."""

    def __init__(
        self,
        repositories: dict[str, Repository[Any]],
        decides: Mapping[str, Callable[[Any], Any]],
        command_id: str | None,
    ) -> None:
        self._repositories = repositories
        self._decides = {check_aggregate_id(key): value for key, value in decides.items()}
        self._command_id = command_id

    async def run(self, access: StoreAccess, attempts: int) -> dict[str, Outcome[Any]]:
        command_id = self._command_id
        current: dict[str, Loaded[Any]] = {
            i: await r.current(i, command_id) for i, r in self._repositories.items()
        }
        for attempt in range(1, attempts + 1):
            if any(landed_in(state, command_id) is not None for state in current.values()):
                return await self._landed(current)  # known to have landed: no decide
            try:
                decided = {
                    i: await r.decide(i, self._decides[i], current[i], self._command_id)
                    for i, r in self._repositories.items()
                }
            except AlreadyLanded:
                return await self._landed(current)
            current = {i: decision.current for i, decision in decided.items()}
            appends = [
                self._repositories[i].append_of(i, d.events, d.current.version, self._command_id)
                for i, d in decided.items()
                if d.events
            ]
            if not appends:
                return {
                    i: await r.nothing_decided(i, current[i], self._command_id)
                    for i, r in self._repositories.items()
                }
            try:
                stored = await self._append(access, appends)
            except ConcurrencyError as exc:
                if attempt == attempts:
                    raise
                for conflict in exc.conflicts:
                    i = conflict.aggregate_id
                    current[i] = await self._repositories[i].catch_up(i, current[i])
                continue
            except IntegrityError:
                # A command id that landed before on other aggregates than these decided
                # now (a stale cache decided events where the first run decided none): the
                # markers say so; anything else is a real integrity error.
                landed = await self._landed_if_any(current)
                if landed is None:
                    raise
                return landed
            return await self._outcomes(current, decided, {c.aggregate_id: c for c in stored})
        raise AssertionError("unreachable")  # pragma: no cover

    async def _append(self, access: StoreAccess, appends: list[Append]) -> list[ChangeSet]:
        """One transaction; a bad entry is named by its aggregate (``decides['a'].events``)."""
        try:
            return await append_commands(access, appends, self._command_id)
        except InvalidInputError as exc:
            match = re.match(r"appends\[(\d+)\]\.", exc.argument)
            if match is None:
                raise
            aggregate_id = appends[int(match.group(1))].aggregate_id
            argument = f"decides[{aggregate_id!r}]." + exc.argument[match.end() :]
            raise InvalidInputError(argument, exc.problem) from exc

    async def _outcomes(
        self,
        current: dict[str, Any],
        decided: dict[str, Decision[Any]],
        stored: dict[str, Any],
    ) -> dict[str, Outcome[Any]]:
        outcomes: dict[str, Outcome[Any]] = {}
        for i, repository in self._repositories.items():
            if i in stored:
                outcomes[i] = await repository.committed(i, decided[i], stored[i], self._command_id)
            else:
                outcomes[i] = _unchanged(current[i])
        return outcomes

    async def _landed(self, current: dict[str, Any]) -> dict[str, Outcome[Any]]:
        """The command had landed (known before deciding, or found when a decide
        refused): every aggregate's landed outcome (one it left unchanged: its current
        state)."""
        found = await self._landings(current)
        return {i: outcome or _unchanged(current[i]) for i, outcome in found.items()}

    async def _landed_if_any(self, current: dict[str, Any]) -> dict[str, Outcome[Any]] | None:
        """After a refused transaction: if the command id's marker is on any of the
        aggregates, every aggregate's landed outcome (one it left unchanged: its state
        read again, as ``current`` may be stale); else None."""
        found = await self._landings(current)
        if all(outcome is None for outcome in found.values()):
            return None
        return {
            i: outcome or _unchanged(await self._repositories[i].catch_up(i, current[i]))
            for i, outcome in found.items()
        }

    async def _landings(self, current: dict[str, Any]) -> dict[str, Outcome[Any] | None]:
        """Each aggregate's outcome of the command id, None where it did not land."""
        return {
            i: await repository.landed(i, current[i], self._command_id)
            for i, repository in self._repositories.items()
        }


def _unchanged(loaded: Loaded[Any]) -> Outcome[Any]:
    """The outcome for an aggregate the command left as it is."""
    return Outcome(version=loaded.version, state=loaded.state, change_set=None)


def as_decider(value: Any, argument: str) -> Decider[Any]:
    """A Decider, or the decider of an Aggregate subclass."""
    if isinstance(value, Decider):
        return value
    to_decider = getattr(value, "__decider__", None)
    if isinstance(value, type) and callable(to_decider):
        decider = to_decider()
        if isinstance(decider, Decider):
            return decider
    raise InvalidInputError(argument, f"must be a Decider or an Aggregate subclass, not {value!r}")
