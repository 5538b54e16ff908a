"""Build `transitions` machines from declared tables, and log every state change once.

A `MachineTable` is plain data: states, transitions (dicts: trigger, source, dest, optional conditions/unless/after
by name), the initial state and the terminal states. `build_machine` turns it into a transitions `AsyncMachine` (or
`Machine`) with `auto_transitions=False`, queued transitions and illegal triggers raising `MachineError`.
Each change of state is logged as exactly one `state_change` event with machine, old, new and trigger.
No I/O here: behaviour lives in the model's callbacks (in `controller/`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine
from transitions.core import MachineError
from transitions.extensions.asyncio import AsyncMachine

__all__ = ["MachineError", "MachineTable", "StateModel", "build_machine", "to_mermaid", "table_rows"]

_TRANSITION_KEYS = {"trigger", "source", "dest", "conditions", "unless", "after", "doc"}


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class MachineTable:
    """One state machine as data.

    `transitions`: dicts with `trigger`, `source` (a state or a list of states), `dest` (a state, or None for an
    internal transition that stays put without leaving the state), optional `conditions` / `unless` (names of
    model predicates), `after` (names of model callbacks) and `doc` (shown in `pycam states`). Transitions sharing
    a trigger and source are tried in order; the first whose conditions hold is taken.
    """

    name: str
    states: tuple[str, ...]
    transitions: tuple[dict[str, Any], ...]
    initial: str
    terminal: tuple[str, ...] = ()
    doc: str = ""
    state_docs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(self.states))
        object.__setattr__(self, "terminal", tuple(self.terminal))
        object.__setattr__(self, "transitions", tuple(dict(t) for t in self.transitions))
        self.validate()

    def validate(self) -> None:
        """Refuse tables that reference unknown states, leave terminal states, or strand a state."""
        known = set(self.states)
        if len(known) != len(self.states):
            raise ValueError(f"{self.name}: duplicate state names")
        if self.initial not in known:
            raise ValueError(f"{self.name}: initial state {self.initial!r} is not a state")
        for t in self.terminal:
            if t not in known:
                raise ValueError(f"{self.name}: terminal state {t!r} is not a state")
        leaving: set[str] = set()
        for i, tr in enumerate(self.transitions):
            where = f"{self.name}: transition {i} ({tr.get('trigger')!r})"
            unknown = set(tr) - _TRANSITION_KEYS
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            if not isinstance(tr.get("trigger"), str) or not tr["trigger"].isidentifier():
                raise ValueError(f"{where}: trigger must be an identifier")
            if "dest" not in tr:
                raise ValueError(f"{where}: no dest (use None for an internal transition)")
            sources = _names(tr.get("source"))
            if not sources:
                raise ValueError(f"{where}: no source")
            for s in sources:
                if s not in known:
                    raise ValueError(f"{where}: source {s!r} is not a state")
                if s in self.terminal:
                    raise ValueError(f"{where}: terminal state {s!r} cannot be left")
            if tr["dest"] is not None and tr["dest"] not in known:
                raise ValueError(f"{where}: dest {tr['dest']!r} is not a state")
            if tr["dest"] is not None:
                leaving.update(s for s in sources if s != tr["dest"])
        stranded = [s for s in self.states if s not in self.terminal and s not in leaving]
        if stranded:
            raise ValueError(f"{self.name}: non-terminal states with no way out: {stranded}")
        unreachable = set(self.states) - self.reachable()
        if unreachable:
            raise ValueError(f"{self.name}: states unreachable from {self.initial!r}: {sorted(unreachable)}")

    def reachable(self) -> set[str]:
        seen, todo = {self.initial}, [self.initial]
        while todo:
            state = todo.pop()
            for tr in self.transitions:
                if state in _names(tr["source"]) and tr["dest"] is not None and tr["dest"] not in seen:
                    seen.add(tr["dest"])
                    todo.append(tr["dest"])
        return seen

    @property
    def triggers(self) -> tuple[str, ...]:
        """All trigger names, in table order."""
        return tuple(dict.fromkeys(tr["trigger"] for tr in self.transitions))

    @property
    def condition_names(self) -> tuple[str, ...]:
        """Names of the model predicates the table uses (conditions and unless)."""
        names = [n for tr in self.transitions for key in ("conditions", "unless") for n in _names(tr.get(key))]
        return tuple(dict.fromkeys(names))

    @property
    def callback_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for tr in self.transitions for n in _names(tr.get("after"))))

    def allowed(self, state: str) -> tuple[str, ...]:
        """Triggers accepted in `state` (whatever their conditions)."""
        return tuple(dict.fromkeys(tr["trigger"] for tr in self.transitions if state in _names(tr["source"])))

    def expanded(self) -> list[dict[str, Any]]:
        """One dict per (source, transition) pair, with conditions/unless/after as tuples."""
        rows = []
        for tr in self.transitions:
            for source in _names(tr["source"]):
                rows.append(
                    {
                        "trigger": tr["trigger"],
                        "source": source,
                        "dest": tr["dest"],
                        "conditions": _names(tr.get("conditions")),
                        "unless": _names(tr.get("unless")),
                        "after": _names(tr.get("after")),
                        "doc": tr.get("doc", ""),
                    }
                )
        return rows


class StateModel:
    """A bare model for a machine whose predicates are given as callables (see `build_machine(conditions=...)`).

    Using a dedicated model keeps trigger methods (`start`, `stop` ...) and `.state` from clashing with the
    attributes of the object that owns the machine.
    """

    state: str

    def __repr__(self) -> str:
        return f"<StateModel state={getattr(self, 'state', None)!r}>"


def build_machine(
    model: Any,
    table: MachineTable,
    name: str | None = None,
    logger: Any = None,
    *,
    asynchronous: bool = True,
    conditions: Mapping[str, Callable[..., bool]] | None = None,
) -> AsyncMachine | Machine:
    """Build the machine of `table` on `model` (None: a fresh `StateModel`).

    Predicates named in the table are looked up in `conditions` first, then on the model; they take no
    arguments. A missing one is an error at build time, not at the first trigger. Callbacks (`after`,
    `on_enter_<state>` methods of the model) receive transitions' EventData. Trigger through `model.trigger("name", **kw)` (or the bound
    trigger methods); an illegal trigger raises `MachineError`. A `reason=` keyword given to a trigger is logged.
    With `asynchronous=True` triggers are coroutines (`await model.trigger(...)`).
    """
    if name is not None and not isinstance(name, str):
        raise TypeError("build_machine(model, table, name=None, logger=None): name must be a str")
    machine_name = name or table.name
    model = StateModel() if model is None else model
    conditions = dict(conditions or {})
    missing = [c for c in table.condition_names if c not in conditions and not callable(getattr(model, c, None))]
    missing += [c for c in table.callback_names if not callable(getattr(model, c, None))]
    if missing:
        raise ValueError(f"machine {machine_name!r}: the model lacks {', '.join(missing)}")
    if logger is None:
        from structlog import get_logger

        logger = get_logger()
    log = logger.bind(machine=machine_name)

    def predicate(name: str) -> Callable[[Any], bool]:
        # Looked up at each call, so a test or the controller may swap the model's attribute later.
        if name in conditions:
            func = conditions[name]
            return lambda event: bool(func())
        return lambda event: bool(getattr(model, name)())

    def resolve(names: tuple[str, ...]) -> list[Any]:
        return [predicate(n) for n in names]

    transitions = []
    for tr in table.transitions:
        spec = {"trigger": tr["trigger"], "source": list(_names(tr["source"])), "dest": tr["dest"]}
        if tr.get("conditions"):
            spec["conditions"] = resolve(_names(tr["conditions"]))
        if tr.get("unless"):
            spec["unless"] = resolve(_names(tr["unless"]))
        if tr.get("after"):
            spec["after"] = list(_names(tr["after"]))
        transitions.append(spec)
    states = [{"name": s, "final": s in table.terminal} for s in table.states]

    def log_change(event_data: Any) -> None:
        transition = event_data.transition
        if transition is None or transition.dest is None:
            return  # internal transition: the state did not change
        fields = {"old": transition.source, "new": transition.dest, "trigger": event_data.event.name}
        reason = event_data.kwargs.get("reason")
        if reason is not None:
            fields["reason"] = reason
        log.info("state_change", **fields)

    def log_error(event_data: Any) -> None:
        error = event_data.error
        state = getattr(event_data.state, "name", None)
        trigger = event_data.event.name if event_data.event is not None else None
        if isinstance(error, MachineError):
            log.warning("illegal_trigger", state=state, trigger=trigger)
        else:
            log.error("transition_failed", state=state, trigger=trigger, error=repr(error))
        # Callers must see the failure: an illegal trigger is a bug in the caller, not something to swallow.
        raise error

    cls = AsyncMachine if asynchronous else Machine
    machine = cls(
        model=model,
        states=states,
        transitions=transitions,
        initial=table.initial,
        auto_transitions=False,
        queued=True,
        ignore_invalid_triggers=False,
        send_event=True,
        after_state_change=[log_change],
        on_exception=[log_error],
        name=machine_name,
    )
    return machine


def table_rows(table: MachineTable) -> list[tuple[str, str, str, str]]:
    """(source, trigger, dest, guard) rows for printing; dest "(stay)" for internal transitions."""
    rows = []
    for tr in table.expanded():
        guard = " and ".join([*tr["conditions"], *(f"not {u}" for u in tr["unless"])])
        rows.append((tr["source"], tr["trigger"], tr["dest"] or "(stay)", guard))
    return rows


def to_mermaid(table: MachineTable) -> str:
    """A mermaid `stateDiagram-v2` of the table (terminal states point to [*])."""
    lines = ["stateDiagram-v2", f"    [*] --> {table.initial}"]
    for source, trigger, dest, guard in table_rows(table):
        label = f"{trigger} [{guard}]" if guard else trigger
        target = source if dest == "(stay)" else dest
        lines.append(f"    {source} --> {target}: {label}")
    for state in table.terminal:
        lines.append(f"    {state} --> [*]")
    for state, doc in table.state_docs.items():
        lines.append(f"    note right of {state}: {doc}")
    return "\n".join(lines) + "\n"
