"""`foreshock topology`: the call graph in use, as an on-call engineer reads it.

The graph comes from configuration (`correlation.topology`, the file a job
loads) or from a dataset's own call graph, and is shown three ways:

- text: the services by layer, the calls, then a tree of what each
  user-facing service depends on, and the services no user reaches;
- json: the same facts for tools;
- dot: the graph in the Graphviz DOT language, to draw it.

Only dependencies of a user-facing service can be ranked as an incident's
root cause or raise an early warning, so the tree is what the correlator
can blame, and the unreached services are what it never will.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from foreshock.config import load_settings
from foreshock.datasets import nezha_days, petshop_scenarios
from foreshock.layers import USER_FACING, Layer
from foreshock.topology import Topology

__all__ = [
    "FORMATS",
    "Shown",
    "load",
    "render",
    "render_dot",
    "render_json",
    "render_text",
    "show",
]

FORMATS = ("text", "json", "dot")
_LAYER_ORDER = {layer: i for i, layer in enumerate(Layer)}
_WIDTH = 88


@dataclass(frozen=True, slots=True)
class Shown:
    """A topology and a sentence saying where it came from."""

    source: str
    topology: Topology


def load(
    config: Path | None = None,
    dataset: str | None = None,
    data: Path | None = None,
    subset: str | None = None,
) -> Shown:
    """The topology a job with `config` uses, or that of a dataset's folder.

    `subset` picks a Nezha day or a PetShop scenario; by default the first.
    """
    if dataset is None:
        if data is not None:
            raise ValueError("--data needs --dataset (nezha or petshop)")
        return _from_config(config)
    if config is not None:
        raise ValueError("give --config or --dataset, not both")
    if data is None:
        raise ValueError(f"--dataset {dataset} needs --data, the dataset's folder")
    return _from_dataset(dataset, data, subset)


def show(
    config: Path | None,
    dataset: str | None,
    data: Path | None,
    subset: str | None,
    output: str = "text",
) -> int:
    """Print the topology; a source that cannot be read is a usage error (2)."""
    try:
        shown = load(config, dataset, data, subset)
    except ValidationError:
        # Settings that do not load are said as by every command: in one
        # line, by the setting's name.
        raise
    except (ValueError, FileNotFoundError) as error:
        print(f"foreshock topology: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(render(shown, output))
    return 0


def render(shown: Shown, output: str) -> str:
    """The topology in one of `FORMATS`."""
    if output == "json":
        return render_json(shown)
    if output == "dot":
        return render_dot(shown.topology)
    if output == "text":
        return render_text(shown)
    raise ValueError(f"unknown format {output!r}; choose from {list(FORMATS)}")


# -- sources --------------------------------------------------------------------


def _from_config(config: Path | None) -> Shown:
    settings = load_settings(config)
    path = settings.correlation.topology
    where = f"configuration {config}" if config else "default configuration"
    if path is None:
        return Shown(f"{where}: no correlation.topology set", Topology())
    if not path.is_file():
        raise FileNotFoundError(
            f"correlation.topology names {str(path)!r} ({where}), which is not a "
            "file: point it at a JSON or CSV call graph"
        )
    return Shown(f"{path} (correlation.topology, {where})", Topology.load(path))


def _from_dataset(dataset: str, data: Path, subset: str | None) -> Shown:
    if dataset == "nezha":
        from connectors.nezha import load_day

        day = nezha_days(data, subset)[0]
        return Shown(f"Nezha day {day.name} ({day})", load_day(day).topology)
    if dataset == "petshop":
        from connectors.petshop import load_scenario

        folder = petshop_scenarios(data, subset)[0]
        topology = load_scenario(folder).topology
        return Shown(f"PetShop scenario {folder.name} ({folder})", topology)
    raise ValueError(f"unknown dataset {dataset!r}; choose from ['nezha', 'petshop']")


# -- text -----------------------------------------------------------------------


def render_text(shown: Shown) -> str:
    """Services by layer, calls, and a tree from each user-facing service."""
    t = shown.topology
    services = t.services()
    users = _user_facing(t)
    lines = [
        f"Topology from {shown.source}",
        f"{len(services)} services, {len(t.calls)} calls, {len(users)} user-facing",
    ]
    if not services:
        lines += _wrapped(
            "",
            "Set correlation.topology to a JSON or CSV call graph: without one, "
            "each service is judged alone and nothing is blamed on a dependency.",
        )
        return "\n".join(lines) + "\n"

    lines += ["", "Services by layer"]
    groups = _by_layer(t)
    width = max(len(layer) for layer, _ in groups)
    for layer, names in groups:
        lines += _wrapped(f"  {layer:<{width}}  ", ", ".join(names))

    lines += ["", "Calls (caller -> callee)"]
    lines += [f"  {a} -> {b}" for a, b in sorted(t.calls)] or ["  none"]

    lines += ["", "What each user-facing service depends on"]
    if not users:
        lines.append(
            "  none: no service is frontend, mobile or synthetic, so no incident "
            "can open"
        )
    for user in users:
        count = len(t.dependencies(user))
        lines.append(f"  {user} [{_layer_name(t, user)}]: depends on {count} services")
        lines += [f"    {line}" for line in _tree(t, user)]

    unreached = _unreached(t, users)
    if unreached:
        lines += ["", "Outside every user's path (never a root cause or a warning)"]
        lines += _wrapped("  ", ", ".join(unreached))
    return "\n".join(lines) + "\n"


def _wrapped(first: str, text: str) -> list[str]:
    # Long names stay whole: a service name cut in two cannot be searched for.
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=first,
        subsequent_indent=" " * len(first),
        break_long_words=False,
        break_on_hyphens=False,
    )


def _tree(t: Topology, root: str) -> Iterator[str]:
    """The callees under `root`, each expanded once; repeats say so."""
    shown = {root}

    def walk(service: str, prefix: str) -> Iterator[str]:
        callees = t.callees(service)
        for i, callee in enumerate(callees):
            last = i == len(callees) - 1
            branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
            repeat = callee in shown
            note = " (see above)" if repeat else ""
            yield f"{prefix}{branch}{callee} [{_layer_name(t, callee)}]{note}"
            if not repeat:
                shown.add(callee)
                yield from walk(callee, prefix + indent)

    yield from walk(root, "")


def _by_layer(t: Topology) -> list[tuple[str, list[str]]]:
    groups: dict[Layer | None, list[str]] = {}
    for service in t.services():
        groups.setdefault(t.layers.get(service), []).append(service)
    # Layers from users down; services without one last.
    order = sorted(groups, key=lambda k: len(Layer) if k is None else _LAYER_ORDER[k])
    return [(k.value if k else "(no layer)", groups[k]) for k in order]


def _layer_name(t: Topology, service: str) -> str:
    layer = t.layers.get(service)
    return layer.value if layer else "?"


def _user_facing(t: Topology) -> list[str]:
    return [s for s in t.services() if t.layers.get(s) in USER_FACING]


def _unreached(t: Topology, users: list[str]) -> list[str]:
    reached = set(users)
    for user in users:
        reached.update(t.dependencies(user))
    return [s for s in t.services() if s not in reached]


# -- json and dot -----------------------------------------------------------------


def render_json(shown: Shown) -> str:
    """The same facts as the text, for tools; distances are in calls."""
    t = shown.topology
    users = _user_facing(t)
    document = {
        "source": shown.source,
        "services": {
            s: (layer.value if (layer := t.layers.get(s)) else None)
            for s in t.services()
        },
        "calls": [list(edge) for edge in sorted(t.calls)],
        "user_facing": {
            u: dict(sorted(t.dependencies(u).items(), key=lambda kv: (kv[1], kv[0])))
            for u in users
        },
        "unreached": _unreached(t, users),
    }
    return json.dumps(document, indent=2) + "\n"


def render_dot(t: Topology) -> str:
    """The graph in the DOT language; user-facing services drawn doubled.

    Written here rather than with a Graphviz binding: service names such as
    `orders_AWS::DynamoDB::Table` hold colons, which a binding's edge helper
    reads as ports, while a quoted DOT ID keeps them as they are.
    """
    lines = ["digraph topology {", "  rankdir=LR;", "  node [shape=box];"]
    for service in t.services():
        # `\n` in a label is a line break: name above, layer below.
        label = f'"{_escape(service)}\\n{_layer_name(t, service)}"'
        extra = ", peripheries=2" if t.layers.get(service) in USER_FACING else ""
        lines.append(f"  {_quote(service)} [label={label}{extra}];")
    lines += [f"  {_quote(a)} -> {_quote(b)};" for a, b in sorted(t.calls)]
    return "\n".join([*lines, "}"]) + "\n"


def _quote(name: str) -> str:
    return f'"{_escape(name)}"'


def _escape(name: str) -> str:
    # In a quoted DOT ID only the quote needs escaping; a backslash is doubled
    # so that a name is never read as an escape such as `\n`.
    return name.replace("\\", "\\\\").replace('"', '\\"')
