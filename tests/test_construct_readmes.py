"""Each construct's README against its code: reviewers copy the examples and read the tables as the API, so they
must not drift. Nothing is synthesized: the checks read the README's tables and examples, and the exported names'
signatures (`inspect`) and class sources (`ast`)."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import textwrap

import pytest
from constructs import Construct

from tests.assembly import REPO_ROOT

PACKAGES = sorted(p.name for p in (REPO_ROOT / "constructs").iterdir() if (p / "__init__.py").exists())
# What every construct takes positionally and no Props table lists.
POSITIONAL = {"self", "scope", "construct_id", "id"}


class Readme:
    """One package's README and its exports."""

    def __init__(self, package: str) -> None:
        self.name = f"constructs/{package}/README.md"
        self.text = (REPO_ROOT / self.name).read_text()
        self.module = importlib.import_module(f"constructs.{package}")
        self.exports = {name: getattr(self.module, name) for name in self.module.__all__}
        self.constructs = [name for name, obj in self.exports.items() if inspect.isclass(obj) and issubclass(obj, Construct)]

    def tables(self):
        """(section, heading, lead, header, rows) per table outside code blocks: its `## ` section, the nearest
        heading above it, the prose between that heading (or the previous table) and it, and the cells."""
        section = heading = ""
        lead: list[str] = []
        table = None
        for line in re.sub(r"^```.*?^```", "", self.text, flags=re.M | re.S).splitlines() + [""]:
            if line.startswith("|"):
                cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
                if table is None:
                    table = (section, heading, " ".join(lead), cells, [])
                elif not set(line) <= set("|-: "):
                    table[4].append(cells)
                continue
            if table:
                yield table
                table, lead = None, []
            if line.startswith("#"):
                heading, lead = line, []
                section = line if line.startswith("## ") else section
            elif line.strip():
                lead.append(line)

    def python_blocks(self):
        """(first line number, source) of each ```python block."""
        for match in re.finditer(r"^```python\n(.*?)^```", self.text, flags=re.M | re.S):
            yield self.text.count("\n", 0, match.start()) + 2, match.group(1)


def parameters(obj) -> dict[str, bool] | None:
    """Parameter name -> required, without what every construct takes positionally; None for `*args, **kwargs`
    (ServiceExtension's inherited object.__init__: nothing to check)."""
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds and inspect.Parameter.VAR_POSITIONAL in kinds:
        return None
    return {p.name: p.default is p.empty for p in signature.parameters.values()
            if p.name not in POSITIONAL and p.kind is not p.VAR_KEYWORD}


def compare(readme: Readme, where: str, name: str, documented: dict[str, bool]) -> list[str]:
    actual = parameters(readme.exports[name])
    if actual is None:
        return []
    documented = {p: required for p, required in documented.items() if p not in POSITIONAL}
    problems = [f"{readme.name}: {where} lacks `{p}` (a parameter of {name})" for p in actual.keys() - documented.keys()]
    problems += [f"{readme.name}: {where} documents `{p}`, which {name} does not take" for p in documented.keys() - actual.keys()]
    for p in documented.keys() & actual.keys():
        if documented[p] != actual[p]:
            says, is_ = ("required", "has a default") if documented[p] else ("a default", "is required")
            problems.append(f"{readme.name}: {where} gives `{p}` {says}, but in {name} it {is_}")
    return problems


@pytest.mark.parametrize("package", PACKAGES)
def test_props_tables_match_the_signatures(package):
    """Every Props table (header `Prop`) against the signature of the exports it documents: those a `Name(...)` line
    above it names, else those its nearest heading names. A prose signature `Name(a, *, b=None)` is checked the same
    way; every construct must have one or the other."""
    readme = Readme(package)
    documented: dict[str, dict[str, bool]] = {}
    problems = []
    for _, heading, lead, header, rows in readme.tables():
        if header[0] != "Prop":
            continue
        named = [n for n in re.findall(r"`(\w+)\(", lead) if n in readme.exports]
        named = named or [n for n in re.findall(r"\w+", heading) if n in readme.exports]
        if not named:
            problems.append(f"{readme.name}: the Props table under `{heading}` names no class: put `Class(...)` above it or the class in its heading")
        for name in named:
            for row in rows:  # `a`, `b` share a row; `*rule_ids` is a parameter too
                for prop in re.findall(r"`\*?([\w.]+)`", row[0]):
                    documented.setdefault(name, {})[prop] = row[header.index("Default")].startswith("required")
    problems += [p for name, props in documented.items() for p in compare(readme, "Props table", name, props)]

    # Signatures in prose, e.g. `TableIndex(name, partition_key, sort_key)`; `...` marks one a table completes.
    for name, args in re.findall(r"`([A-Za-z_]\w*)\(([^`]*)\)(?: -> [^`]*)?`", readme.text):
        if name in readme.exports and callable(readme.exports[name]) and "..." not in args:
            try:
                spec = ast.parse(f"def f({args}): pass").body[0].args
            except SyntaxError:
                problems.append(f"{readme.name}: the signature `{name}({args})` does not parse as Python")
                continue
            plain = spec.posonlyargs + spec.args
            required = {a.arg: i < len(plain) - len(spec.defaults) for i, a in enumerate(plain)}
            required |= {a.arg: d is None for a, d in zip(spec.kwonlyargs, spec.kw_defaults, strict=True)}
            required |= {spec.vararg.arg: True} if spec.vararg else {}
            problems += compare(readme, f"`{name}(...)`", name, required)
            documented.setdefault(name, required)
    problems += [f"{readme.name}: documents no props of {name} (no Props table or `{name}(...)` names it)"
                 for name in readme.constructs if name not in documented]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", PACKAGES)
def test_examples_call_what_exists(package):
    """Every ```python block: names imported from constructs.* exist (a package's in its `__all__`), and each call
    of one of them binds to its signature (no unknown keyword, no missing required argument)."""
    readme = Readme(package)
    imported: dict[str, object] = {}  # across blocks: later ones build on earlier ones
    problems = []
    for first_line, source in readme.python_blocks():
        try:
            tree = ast.parse(source)
        except SyntaxError as error:
            problems.append(f"{readme.name}:{first_line + error.lineno - 1}: example does not parse: {error.msg}")
            continue
        for node in ast.walk(tree):
            line = f"{readme.name}:{first_line + getattr(node, 'lineno', 1) - 1}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("constructs."):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    # A package's API is its __all__; a submodule (constructs.x.service) is imported on purpose.
                    exists = alias.name in module.__all__ if hasattr(module, "__path__") else hasattr(module, alias.name)
                    if exists:
                        imported[alias.asname or alias.name] = getattr(module, alias.name)
                    else:
                        problems.append(f"{line}: example imports `{alias.name}`, which {node.module} does not export")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and callable(imported.get(node.func.id)):
                unpacked = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
                obj = imported[node.func.id]
                if unpacked or parameters(obj) is None:
                    continue
                signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
                positional = [None] * (len(node.args) + inspect.isclass(obj))  # a class's __init__ also takes self
                try:
                    signature.bind(*positional, **{k.arg: None for k in node.keywords})
                except TypeError as error:
                    problems.append(f"{line}: example calls {node.func.id}(...): {error}")
    assert not problems, "\n".join(problems)


@functools.cache
def members(cls: type) -> set[str]:
    """What instances of `cls` have, read from the source of it and its bases in this repo: `self.x = ...`
    anywhere in a method, class-level fields and constants, methods and properties."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("constructs."):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign | ast.Assign):
                names.update(t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and getattr(node.value, "id", "") == "self":
                names.add(node.attr)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_attributes_tables_name_what_instances_have(package):
    """Every name in the Attributes tables is an export, or an attribute (or method) of its class: the one a
    `Class.attr` names (`.attr` after it: the same class), the row's Class/Construct column, or the README's one
    construct."""
    readme = Readme(package)
    problems = []
    for section, _, _, header, rows in readme.tables():
        if section != "## Attributes":
            continue
        column = next(i for i, h in enumerate(header) if h in ("Attribute", "Attributes", "Name"))
        owner_column = next((i for i, h in enumerate(header) if h in ("Class", "Construct")), None)
        last = None
        for row in rows:
            # Asides in parentheses after a name (`facade` (the `MonitoringFacade`)) are not attributes.
            for dotted, owner, name in re.findall(r"`((\w*)\.)?(\w+)(?:\([^`]*\))?`", re.sub(r"\s\([^)]*\)", "", row[column])):
                if not dotted and name in readme.exports:
                    continue
                last = owner or last
                cls = (last if dotted else row[owner_column].strip("`") if owner_column is not None
                       else readme.constructs[0] if len(readme.constructs) == 1 else None)
                if cls is None:
                    problems.append(f"{readme.name}: Attributes table names `{name}` without its class: write `Class.{name}`")
                elif cls not in readme.exports or name not in members(readme.exports[cls]):
                    problems.append(f"{readme.name}: Attributes table names `{name}`, which {cls} does not set")
    assert not problems, "\n".join(problems)
