"""Cluster-wide reads of a partitioned service: every instance answers with its part, and
the parts are merged here into the one reply the client gets. Pure: no I/O.

The merge is the same for every such read (``get rooms``, ``get online users``, ``/admin``
``get stats``...), so that a service declares a read gathered without the gateway knowing
the event:

- objects merge key by key; lists concatenate, in the order of the instances' names, and
  an object with an ``id`` already listed by an earlier instance is left out (every
  instance lists the same gateways; rooms and sockets each belong to one instance);
- list entries that carry ``_order`` (a service's sort key: ``[createdAt ms, id]``) are
  sorted by it once merged, and lose it: "oldest first" holds across instances;
- numbers add up (``userCount``-like totals, the per-namespace counts); anything else
  (``success``, a timestamp) is the first instance's.
- an answer missing instances (down, late past the deadline, busy or failing) says so:
  ``partial: true`` and ``missing: [names]`` in its first argument, when that is an
  object. It is never held back for them, and never silently short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from switchboard.shared.envelope import Emit, Reply

#: The sort key a service may put on list entries of a gathered read (removed here).
ORDER = "_order"


def _id(item: Any) -> str | int | None:
    key = item.get("id") if isinstance(item, dict) else None
    return key if isinstance(key, (str, int)) else None


def merge(values: list[Any]) -> Any:
    """One value from each instance's (in order) merged into one."""
    first = values[0]
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for value in values:
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
        return {key: merge([v[key] for v in values if isinstance(v, dict) and key in v])
                for key in keys}
    if isinstance(first, list):
        out: list[Any] = []
        seen: set[Any] = set()
        for value in values:
            if not isinstance(value, list):
                continue
            ids = [_id(item) for item in value]
            out.extend(item for item, key in zip(value, ids, strict=True)
                       if key is None or key not in seen)
            seen.update(key for key in ids if key is not None)
        if any(isinstance(item, dict) and ORDER in item for item in out):
            out.sort(key=lambda item: item.get(ORDER, ()) if isinstance(item, dict) else ())
            out = [{k: v for k, v in item.items() if k != ORDER} if isinstance(item, dict)
                   else item for item in out]
        return out
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    return first


def _args(parts: list[list[Any]], missing: tuple[str, ...]) -> list[Any]:
    width = max(len(p) for p in parts)
    merged = [merge([p[i] for p in parts if len(p) > i]) for i in range(width)]
    if missing and merged and isinstance(merged[0], dict):
        merged[0] = {**merged[0], "partial": True, "missing": list(missing)}
    return merged


def gathered(replies: Mapping[str, Reply], missing: tuple[str, ...]) -> Reply:
    """The merged reply of the instances that answered (by name), ``missing`` the others.

    An instance that failed (busy, an internal error) is missing too; when every one
    failed, the first failure is the answer.
    """
    names = sorted(replies)
    failed = tuple(name for name in names if not replies[name].ok)
    if len(failed) == len(names):
        return replies[names[0]]
    missing = tuple(sorted((*missing, *failed)))
    ordered = [replies[name] for name in names if replies[name].ok]
    first = ordered[0]
    acks = [r.ack for r in ordered if r.ack is not None]
    ack = _args(acks, missing) if acks else None
    emits: list[Emit] = []
    for i, emit in enumerate(first.emits):
        same = [r.emits[i].args for r in ordered
                if len(r.emits) > i and r.emits[i].event == emit.event]
        emits.append(replace(emit, args=_args(same, missing)))
    return replace(first, ack=ack, emits=tuple(emits))
