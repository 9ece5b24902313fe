"""The import graph and the sizes of cli.py, engine/, formulas/ and templates/, read with ``ast``.

Nothing is imported or run: every ``import`` / ``from ... import`` statement of every
module counts, function-level and ``TYPE_CHECKING`` ones included. The suite fails on

- an import cycle among the project's modules;
- an import of an underscore name from another project module (``from engine.compose
  import _facts``), or reading one through an imported module (``compose._facts``);
- an import against the layer order of the brief ("Layers"; :data:`LAYERS` below): a
  module imports only from its own layer or layers to its left. The one exception is
  ``MemoryModel._repr_latex_`` in engine/model.py, which may import engine.render;
- an engine module :data:`LAYERS` does not place (name it there);
- a module over :data:`MODULE_LINES` lines or a function over :data:`FUNCTION_LINES`.

Dynamic imports (``importlib.import_module(name)``, the profile registry's strings) are
not seen; they are the plug-in mechanism, and their targets sit in the same layer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "formulas", "templates")
MODULE_LINES = 450  # the brief: modules about 300 lines, never over 450
FUNCTION_LINES = 70  # functions about 40 lines, never over 70

# Left to right: a module may import from its own layer and from layers to its left.
# ``name`` is that module; ``name.*`` is the module or package and everything under it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("templates.*",),  # no math and no project imports (test_templates_import_nothing_of_the_project)
    ("formulas.*",),
    ("engine.errors", "engine.limits", "engine.units", "engine.files", "engine.spellings", "engine.integer_search"),
    ("engine.spec", "engine.validate", "engine.family_fields", "engine.families", "engine.families_attention",
     "engine.families_recurrent", "engine.families_multimodal", "engine.families_kimi_vl", "engine.quantization", "engine.registry.*", "engine.gpus", "engine.checkpoint", "engine.hf_cache",
     "engine.hub", "engine.gguf_file"),
    ("engine.architecture",),
    # engine.evaluation, engine.exact, engine.fast_cache: the SymPy-free side of a cached estimate
    ("engine.knob_checks", "engine.scenario", "engine.model", "engine.evaluation", "engine.exact", "engine.fast_cache"),
    ("engine.terms", "engine.profiles.*", "engine.fast", "engine.serving_cache"),
    ("engine.api",),
    # engine (the package): a lazy facade over api, solve, analysis and numeric (PEP 562)
    # engine.question_inputs, engine.readings: the questions' shared inputs, and formula/diff/sensitivity/crossover
    ("engine.solve", "engine.analysis", "engine.search", "engine.layout", "engine.question_inputs", "engine.readings",
     "engine.questions", "engine.serving", "engine.serving_solve", "engine.fast_solve", "engine"),
    # engine.latex_rows: the aligned block's rows (wrapping, the part moments share) for engine.render
    ("engine.latex_rows", "engine.render", "engine.numeric", "engine.sweep", "engine.plot", "engine.html"),
    # engine.cli_options: click options generated from the knob table, sectioned --help
    # engine.cli_outputs: the commands that write formulas out (latex, codegen, sweep, plot, html)
    ("engine.report_serving", "engine.report", "engine.cli_options", "engine.cli_outputs"),
    ("cli",),
)
# (module, function, imported module): the one import allowed to point right
HOOKS = {("engine.model", "MemoryModel._repr_latex_", "engine.render")}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported project module, dotted
    line: int
    scope: str  # "" at module level, else the enclosing "Class.function"
    names: tuple[str, ...] = ()  # names taken from the target by ``from target import ...``


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)
    bound: dict[str, str] = field(default_factory=dict)  # local name -> project module it names


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for cli.py and every .py under the packages."""
    found = {"cli": root / "cli.py"} if (root / "cli.py").exists() else {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def owner(dotted: str, modules) -> str | None:
    """The project module a dotted import names (``engine.api.estimate`` -> engine.api)."""
    while dotted:
        if dotted in modules:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


class ImportCollector(ast.NodeVisitor):
    """Every import statement of one module, with the function or class it sits in."""

    def __init__(self, module: str, is_package: bool, modules):
        self.module, self.modules, self.scope, self.found, self.bound = module, modules, [], [], {}
        self.package = module if is_package else module.rpartition(".")[0]

    def _scoped(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _add(self, target: str | None, line: int, names=()):
        if target and target != self.module:
            self.found.append(Import(self.module, target, line, ".".join(self.scope), tuple(names)))

    def visit_Import(self, node):
        for alias in node.names:
            self._add(owner(alias.name, self.modules), node.lineno)
            if alias.name in self.modules and (alias.asname or "." not in alias.name):
                self.bound[alias.asname or alias.name] = alias.name

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            package = self.package.split(".")
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        plain = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:  # ``from engine import api``: the submodule itself
                self._add(submodule, node.lineno)
                self.bound[alias.asname or alias.name] = submodule
            else:
                plain.append(alias.name)
        if plain:
            self._add(owner(base, self.modules), node.lineno, plain)


def private_attribute_reads(module: Module) -> list[tuple[int, str, str]]:
    """``alias._name`` reads where ``alias`` names another project module this one imported."""
    reads = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            target = module.bound.get(node.value.id)
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if private and target and target != module.name:
                reads.append((node.lineno, target, node.attr))
    return reads


@lru_cache(maxsize=None)
def project(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the project at ``root``, parsed, with its imports."""
    files = module_files(root)
    modules = {}
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        collector = ImportCollector(name, path.name == "__init__.py", files)
        collector.visit(tree)
        modules[name] = Module(name, path, tree, len(source.splitlines()), collector.found, collector.bound)
    return modules


def relative(module: Module, root: Path) -> str:
    return module.path.relative_to(root).as_posix()


def layer_of(name: str) -> int | None:
    """Index in :data:`LAYERS` of the entry naming ``name`` (exactly, else the longest ``.*``)."""
    best = None
    for index, names in enumerate(LAYERS):
        for entry in names:
            package = entry.removesuffix(".*")
            covers = name == package if entry == package else name == package or name.startswith(package + ".")
            if covers and (best is None or entry == package or len(package) > len(best[1])):
                best = (index, package)
                if entry == package:
                    return index
    return None if best is None else best[0]


def is_hook(edge: Import) -> bool:
    return (edge.source, edge.scope, edge.target) in HOOKS


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), hooks left out."""
    edges = {name: sorted({i.target for i in m.imports if not is_hook(i)}) for name, m in modules.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return sorted(found)


def shortest_cycle(start: str, members: set[str], modules: dict[str, Module]) -> list[str]:
    """The shortest import loop from ``start`` back to itself inside ``members`` (BFS)."""
    paths, queue = {start: [start]}, [start]
    while queue:
        here = queue.pop(0)
        for target in sorted({i.target for i in modules[here].imports if not is_hook(i)} & members):
            if target == start:
                return [*paths[here], start]
            if target not in paths:
                paths[target] = [*paths[here], target]
                queue.append(target)
    return [start]


def cycle_problems(modules, root=ROOT) -> list[str]:
    """Each cycle component, then the shortest loop through each of its modules (no repeats)."""
    out = []
    for component in cycles(modules):
        out.append(f"cycle of {len(component)} modules: {', '.join(component)}")
        seen = set()
        for start in component:
            loop = shortest_cycle(start, set(component), modules)
            key = frozenset(zip(loop, loop[1:]))
            if key not in seen:
                seen.add(key)
                out.append("    " + " -> ".join(loop))
    return out


def private_problems(modules, root=ROOT) -> list[str]:
    out = []
    for module in modules.values():
        for edge in module.imports:
            for name in edge.names:
                if name.startswith("_") and not name.startswith("__"):
                    out.append(f"{relative(module, root)}:{edge.line} imports {name} from {edge.target}")
        for line, target, name in private_attribute_reads(module):
            out.append(f"{relative(module, root)}:{line} reads {target}.{name}")
    return sorted(out)


def unplaced_modules(modules) -> list[str]:
    return sorted(name for name in modules if layer_of(name) is None)


def layer_problems(modules, root=ROOT) -> list[str]:
    out = []
    for module in modules.values():
        here = layer_of(module.name)
        for edge in module.imports:
            there = layer_of(edge.target)
            if here is None or there is None or there <= here or is_hook(edge):
                continue
            where = f" (in {edge.scope})" if edge.scope else ""
            out.append(f"{relative(module, root)}:{edge.line} {module.name} (layer {here}) imports "
                       f"{edge.target} (layer {there}){where}")
    return sorted(out)


def size_problems(modules, root=ROOT) -> list[str]:
    out = [f"{relative(m, root)} has {m.lines} lines (limit {MODULE_LINES})"
           for m in modules.values() if m.lines > MODULE_LINES]
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    out.append(f"{relative(module, root)}:{node.lineno} {node.name} is {length} lines "
                               f"(limit {FUNCTION_LINES})")
    return sorted(out)


def report(problems: list[str]) -> str:
    return "\n  ".join(["found:", *problems])


# --- the project ---------------------------------------------------------------------------

def test_the_project_is_found():
    modules = project()
    assert {"cli", "engine.model", "engine.api", "formulas.symbols"} <= set(modules)
    assert sum(len(m.imports) for m in modules.values()) > 50


def test_every_module_has_a_layer():
    assert not unplaced_modules(project()), (
        "give these modules a layer in tests/test_layers.py LAYERS: " + ", ".join(unplaced_modules(project())))


def test_no_import_cycle():
    problems = cycle_problems(project())
    assert not problems, report(problems)


def test_no_underscore_name_from_another_module():
    problems = private_problems(project())
    assert not problems, report(problems)


def test_imports_point_down_the_layers():
    problems = layer_problems(project())
    assert not problems, report(problems)


def test_templates_import_nothing_of_the_project():
    modules = project()
    problems = [f"{relative(m, ROOT)}:{i.line} imports {i.target}"
                for m in modules.values() if m.name.split(".")[0] == "templates" for i in m.imports]
    assert not problems, report(problems)


def test_module_and_function_sizes():
    problems = size_problems(project())
    assert not problems, report(problems)


# --- the checks themselves, on a small made-up project ----------------------------------------

FAKE = {
    "cli.py": "import engine.report\n",
    "formulas/__init__.py": "",
    "formulas/symbols.py": "from formulas import options\n",
    "formulas/options.py": "",
    "templates/__init__.py": "",
    "engine/__init__.py": "",
    "engine/errors.py": "",
    "engine/render.py": "from engine.model import MemoryModel\n",
    "engine/report.py": "from . import render\nfrom .render import _private_helper\nrender._other\n",
    "engine/model.py": (
        "from engine import errors\n"
        "class MemoryModel:\n"
        "    def _repr_latex_(self):\n"
        "        from engine.render import latex\n"
        "    def solve(self):\n"
        "        from engine.api import estimate\n"
        "        return estimate\n"),
    "engine/api.py": "import engine.model\nimport engine.spec as spec\nx = spec._field\n",
    "engine/spec.py": "def f():\n    from engine import api\n" + "    x = 1\n" * 80,
    "engine/newthing.py": "",
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> tuple[Path, dict[str, Module]]:
    root = tmp_path_factory.mktemp("fake_project")
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root, project(root)


def test_checker_reads_relative_from_and_function_level_imports(fake):
    _, modules = fake
    assert {(i.target, i.scope) for i in modules["engine.model"].imports} == {
        ("engine.errors", ""), ("engine.render", "MemoryModel._repr_latex_"), ("engine.api", "MemoryModel.solve")}
    assert {(i.target, i.names) for i in modules["engine.report"].imports} == {
        ("engine.render", ()), ("engine.render", ("_private_helper",))}


def test_checker_finds_cycles_but_not_through_the_hook(fake):
    root, modules = fake
    assert cycles(modules) == [["engine.api", "engine.model", "engine.spec"]]
    assert cycle_problems(modules, root) == [
        "cycle of 3 modules: engine.api, engine.model, engine.spec",
        "    engine.api -> engine.model -> engine.api", "    engine.spec -> engine.api -> engine.spec"]


def test_checker_finds_underscore_names(fake):
    root, modules = fake
    assert private_problems(modules, root) == [
        "engine/api.py:3 reads engine.spec._field", "engine/report.py:2 imports _private_helper from engine.render",
        "engine/report.py:3 reads engine.render._other"]


def test_checker_finds_upward_imports_except_the_hook(fake):
    root, modules = fake
    assert layer_problems(modules, root) == [
        "engine/model.py:6 engine.model (layer 5) imports engine.api (layer 7) (in MemoryModel.solve)",
        "engine/spec.py:2 engine.spec (layer 3) imports engine.api (layer 7) (in f)"]
    assert unplaced_modules(modules) == ["engine.newthing"]


def test_checker_finds_long_functions(fake):
    root, modules = fake
    assert size_problems(modules, root) == ["engine/spec.py:1 f is 82 lines (limit 70)"]
