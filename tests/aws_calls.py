"""A static finder of the AWS SDK operations Python code calls, for tests/test_service_aws_calls.py.

How a boto3 client is recognised (the rules the services' code follows; anything else is not a client):
  1. a call ``client("<service>", ...)`` (servicekit.aws.client, boto3.client) with a botocore service name;
  2. ``a or b`` where either side is a client (``client or aws.client("dynamodb", settings)``);
  3. a name or attribute named after a service the code builds a client for (``dynamodb``, ``clients.secretsmanager``);
  4. a local name or ``self.<attr>`` assigned a client, in the same function or class;
  5. a parameter that some call in the same code passes a client to (``SigningKeys(clients.secretsmanager, ...)``
     makes ``SigningKeys.__init__``'s first parameter a client), by position or keyword;
  6. a call of a function or method that returns a client (``self._ddb()``).
An operation is ``<client>.<xform_name(Operation)>``, called or passed on (``run_sync(self._db.get_item, ...)``).
A method named like an operation on anything else is reported as ``unresolved``, so the caller decides
(conservative: nothing named like an operation goes unnoticed).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
from botocore import xform_name

# Transaction items, as IAM authorizes them: each item needs its own item-level action, and
# TransactWriteItems / TransactGetItems have none of their own (DynamoDB developer guide, "Using IAM
# with DynamoDB transactions"). BatchWriteItem is its own action (Service Authorization Reference).
TRANSACT_ITEM_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem",
                         "Get": "GetItem"}
TRANSACTIONS = {"TransactWriteItems", "TransactGetItems"}

_botocore = botocore.session.get_session()
SERVICES = frozenset(_botocore.get_available_services())


def operations(service: str) -> dict[str, str]:
    """python method name -> operation name, e.g. 'get_item' -> 'GetItem'."""
    return {xform_name(op): op for op in _botocore.get_service_model(service).operation_names}


def iam_prefix(service: str) -> str:
    """The IAM service prefix botocore's model implies: its signing name, else its endpoint prefix."""
    metadata = _botocore.get_service_model(service).metadata
    return metadata.get("signingName") or metadata["endpointPrefix"]


@dataclass(frozen=True)
class Call:
    service: str  # botocore service name, e.g. 'dynamodb'
    operation: str  # e.g. 'TransactWriteItems'
    where: str  # 'path:line'
    items: tuple[str, ...] = ()  # transaction / batch item kinds found in the same module


@dataclass
class Found:
    calls: set[Call] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)  # 'path:line receiver.method' named like an operation, not on a client


def _client_service_literal(node: ast.AST) -> str | None:
    """Rule 1: client("<service>", ...)."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name == "client" and node.args[0].value in SERVICES:
            return node.args[0].value
    return None


class _Scopes(ast.NodeVisitor):
    """Walks a module remembering the enclosing class and function of every node."""

    def __init__(self, path: str, tree: ast.Module):
        self.path, self.tree = path, tree
        self.klass: str | None = None
        self.function: str | None = None
        self.top: str | None = None  # the top-level definition (class or function) a node is in

    def visit_ClassDef(self, node):
        outer = (self.klass, self.top)
        self.klass, self.top = node.name, self.top or node.name
        self.generic_visit(node)
        self.klass, self.top = outer

    def visit_FunctionDef(self, node):
        outer = (self.function, self.top)
        self.function, self.top = node.name, self.top or node.name
        self.on_function(node)
        self.generic_visit(node)
        self.function, self.top = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def on_function(self, node):
        pass


class _Analysis:
    def __init__(self, modules: dict[str, ast.Module]):
        self.modules = modules
        # Services the code builds a client for (rule 3 applies to these names only).
        self.created = {s for tree in modules.values() for n in ast.walk(tree) if (s := _client_service_literal(n))}
        self.names: dict[tuple, str] = {}  # (path, class, function, name) -> service
        self.attributes: dict[tuple, str] = {}  # (class, attr) -> service
        self.parameters: dict[tuple, str] = {}  # (callable name, parameter) -> service
        self.returns: dict[str, str] = {}  # function name -> service
        self.signatures: dict[str, list[str]] = {}  # callable name -> its parameters (a class: its __init__'s, without self)
        for tree in modules.values():
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
                    self.signatures.setdefault(node.name, params)
                elif isinstance(node, ast.ClassDef):
                    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                    if init:
                        self.signatures[node.name] = [a.arg for a in init.args.args[1:] + init.args.kwonlyargs]

    def service_of(self, node: ast.AST, scope: _Scopes) -> str | None:
        if service := _client_service_literal(node):
            return service
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            return next((s for v in node.values if (s := self.service_of(v, scope))), None)
        if isinstance(node, ast.Name):
            if node.id in self.created:
                return node.id
            key = (scope.path, scope.klass, scope.function, node.id)
            return self.names.get(key) or self.parameters.get(((scope.klass if scope.function == "__init__" else scope.function), node.id))
        if isinstance(node, ast.Attribute):
            if node.attr in self.created:
                return node.attr
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.attributes.get((scope.klass, node.attr))
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            return self.returns.get(name)
        return None

    def bind(self) -> None:
        """Rules 4-6, to a fixpoint: a binding found late can make an earlier one resolvable."""
        analysis = self

        class Binder(_Scopes):
            changed = False

            def learn(self, table, key, service):
                if service and table.get(key) != service:
                    table[key] = service
                    Binder.changed = True

            def visit_Assign(self, node):
                service = analysis.service_of(node.value, self)
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.learn(analysis.names, (self.path, self.klass, self.function, target.id), service)
                    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                        self.learn(analysis.attributes, (self.klass, target.attr), service)
                self.generic_visit(node)

            def visit_Return(self, node):
                if node.value is not None and self.function:
                    self.learn(analysis.returns, self.function, analysis.service_of(node.value, self))
                self.generic_visit(node)

            def visit_Call(self, node):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
                params = analysis.signatures.get(name, [])
                if params and params[0] == "self":
                    params = params[1:]
                for position, arg in enumerate(node.args):
                    if position < len(params):
                        self.learn(analysis.parameters, (name, params[position]), analysis.service_of(arg, self))
                for keyword in node.keywords:
                    if keyword.arg:
                        self.learn(analysis.parameters, (name, keyword.arg), analysis.service_of(keyword.value, self))
                self.generic_visit(node)

        for _ in range(10):
            Binder.changed = False
            for path, tree in self.modules.items():
                Binder(path, tree).visit(tree)
            if not Binder.changed:
                return
        raise AssertionError("client bindings did not settle")


def _item_kinds(tree: ast.Module, kinds) -> tuple[str, ...]:
    """String keys of dict literals in the module that are transaction / batch item kinds."""
    return tuple(sorted({k.value for n in ast.walk(tree) if isinstance(n, ast.Dict)
                         for k in n.keys if isinstance(k, ast.Constant) and k.value in kinds}))


def find_calls(modules: dict[str, ast.Module]) -> dict[str, Found]:
    """Top-level definition ('path::Name', or 'path::' for module level) -> what it calls."""
    analysis = _Analysis(modules)
    analysis.bind()
    by_method = {}
    for service in analysis.created:
        for method, operation in operations(service).items():
            by_method.setdefault(method, []).append(operation)
    found: dict[str, Found] = {}

    class Finder(_Scopes):
        def visit_Attribute(self, node):
            if node.attr in by_method:
                entry = found.setdefault(f"{self.path}::{self.top or ''}", Found())
                where = f"{self.path}:{node.lineno}"
                service = analysis.service_of(node.value, self)
                if service and node.attr in operations(service):
                    operation = operations(service)[node.attr]
                    items = ()
                    if operation in TRANSACTIONS:  # (BatchWriteItem is an IAM action of its own)
                        items = _item_kinds(self.tree, TRANSACT_ITEM_ACTIONS)
                    entry.calls.add(Call(service, operation, where, items))
                else:
                    entry.unresolved.add(f"{where} {ast.unparse(node)}")
            self.generic_visit(node)

    for path, tree in modules.items():
        Finder(path, tree).visit(tree)
    return found


def referenced_names(tree: ast.AST) -> set[str]:
    """Every name a piece of code mentions: names, attributes, imported names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    return names


def parse(paths: list[Path], root: Path) -> dict[str, ast.Module]:
    return {str(p.relative_to(root)): ast.parse(p.read_text(), filename=str(p)) for p in paths}
