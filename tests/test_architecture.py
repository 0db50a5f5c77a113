"""The package's floors: every module sits on one, imports only from its own floor or below, and no import circle
exists (README.md, "Architecture"). Read with `ast` from the package's own files; nothing is imported.

Every import counts, those inside functions too (a lazy import is still a dependency), except those under
``if TYPE_CHECKING:`` (never run). A module's floor is in ``FLOORS`` below; a new module needs a line there and in
the README's Architecture section, which must say the same.

The Space's runtime (``hubstyle/space.py`` and the ``space_settings`` and ``space_models`` modules it imports) travels
without hubstyle, so it holds copies of a few of hubstyle's functions and constants; the last tests check each copy
against its original, so the two cannot drift.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hubstyle"

# Bottom up. A module may import from its own floor and the floors below it.
ORDER = ("ground", "config", "facts", "data", "models", "train", "merge", "evaluate", "synthesis", "publish", "flow",
         "face")
FLOORS = {
    # ground: file names, errors, atomic writes and file hashes, environment switches, Hub-id rules, the machine and
    # its memory.
    # hubstyle/__init__.py holds __version__ and a lazy table of public names (strings: importing hubstyle imports
    # none of them), and every submodule import runs it first, so it is ground too.
    "hubstyle": "ground",
    "hubstyle.errors": "ground",
    "hubstyle.layout": "ground",
    "hubstyle.fsio": "ground",
    "hubstyle.env": "ground",
    "hubstyle.repo_ids": "ground",
    "hubstyle.machine": "ground",
    "hubstyle.memory": "ground",  # peak memory of each stage: like machine, a fact about where a run ran
    # config: the run's dataclasses and every value list they validate against
    "hubstyle.config": "config",
    # facts: the typed record of a run
    "hubstyle.facts": "facts",
    # data: corpora, dialogue, splits, samples, the training set, the run manifest (hashes of the data it read)
    "hubstyle.data": "data",
    "hubstyle.data.chat": "data",
    "hubstyle.data.clean": "data",
    "hubstyle.data.dialogue": "data",
    "hubstyle.data.mix": "data",
    "hubstyle.data.parallel": "data",
    "hubstyle.data.scripts": "data",
    "hubstyle.data.sources": "data",
    "hubstyle.data.splits": "data",
    "hubstyle.dataset": "data",
    "hubstyle.samples": "data",
    "hubstyle.manifest": "data",
    # bases and models: where a base comes from, loading models and tokenizers, chat templates
    "hubstyle.bases": "models",
    "hubstyle.models": "models",
    "hubstyle.chat": "models",
    # train: token blocks, the training loop, LoRA/full training, the tiny base, seq2seq pairs, loss plots, tracking
    "hubstyle.packing": "train",
    "hubstyle.loop": "train",
    "hubstyle.train": "train",
    "hubstyle.pretrain": "train",
    "hubstyle.seq2seq": "train",
    "hubstyle.plots": "train",
    "hubstyle.tracking": "train",  # experiment tracking: the loop logs through it, the pipeline adds evaluation
    # merge: adapters into their base, weighted blends
    "hubstyle.merge": "merge",
    # evaluate: classifier, generation, perplexity, style rate, answers, demo table, sweeps, seq2seq evaluation
    "hubstyle.evaluate": "evaluate",
    "hubstyle.evaluate.answers": "evaluate",
    "hubstyle.evaluate.classifier": "evaluate",
    "hubstyle.evaluate.demo_table": "evaluate",
    "hubstyle.evaluate.generation": "evaluate",
    "hubstyle.evaluate.pair": "evaluate",
    "hubstyle.evaluate.passages": "evaluate",
    "hubstyle.evaluate.perplexity": "evaluate",
    "hubstyle.evaluate.prompts": "evaluate",
    "hubstyle.evaluate.run": "evaluate",
    "hubstyle.evaluate.sampling": "evaluate",
    "hubstyle.evaluate.seq2seq": "evaluate",
    "hubstyle.evaluate.stats": "evaluate",
    "hubstyle.evaluate.style_rate": "evaluate",
    "hubstyle.evaluate.sweep": "evaluate",
    # synthesis: restylers (trained on parallel pairs) and the chat data distilled through them
    "hubstyle.restyle": "synthesis",
    "hubstyle.restyle.build": "synthesis",
    "hubstyle.restyle.distill": "synthesis",
    "hubstyle.restyle.evaluate": "synthesis",
    "hubstyle.restyle.model": "synthesis",
    "hubstyle.restyle.pool": "synthesis",
    # publish: cards, repo folders, GGUF export, the Hub, the Space
    "hubstyle.card": "publish",
    "hubstyle.card_sections": "publish",
    "hubstyle.export": "publish",
    "hubstyle.gguf_format": "publish",
    "hubstyle.hub": "publish",
    "hubstyle.publish": "publish",
    "hubstyle.dataset_repo": "publish",
    "hubstyle.release": "publish",
    "hubstyle.space": "publish",
    "hubstyle.space_settings": "publish",
    "hubstyle.space_models": "publish",
    "hubstyle.space_folder": "publish",
    "hubstyle.restyle.publish": "publish",
    # flow: the orchestrators (the runner's stages, the pipeline they call, the restyler build)
    "hubstyle.pipeline": "flow",
    "hubstyle.runner": "flow",
    "hubstyle.restyle.run": "flow",
    # face: what a person calls
    "hubstyle.cli": "face",
    "hubstyle.loading": "face",
    "hubstyle.quickstart": "face",
    "hubstyle.doctor": "face",  # `hubstyle doctor`: whether the quickstart can run here
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Return {dotted name: file} of every module of the package."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """Return {hubstyle module it imports: first line} for module ``name`` (function-level imports included)."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target != name:
            found.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "hubstyle":
                        add(alias.name, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "hubstyle":
                    continue
                for alias in child.names:  # `from hubstyle import hub` imports the module hubstyle.hub
                    add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target, child.lineno)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Return 'a (floor) -> b (floor), line N' for each import from a lower floor up to a higher one."""
    rank = {floor: i for i, floor in enumerate(ORDER)}
    return [f"{a} ({FLOORS[a]}) -> {b} ({FLOORS[b]}), line {line}"
            for a, targets in sorted(graph.items()) for b, line in sorted(targets.items())
            if a in FLOORS and b in FLOORS and rank[FLOORS[b]] > rank[FLOORS[a]]]


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Return the import circles: strongly connected components of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


# --------------------------------------------------------------------------------------------------- the floors


def test_every_module_has_a_floor():
    modules = set(package_modules())
    new = sorted(modules - set(FLOORS))
    assert not new, f"give these modules a floor in FLOORS and in README.md's Architecture section: {new}"
    assert not set(FLOORS) - modules, f"FLOORS names modules that do not exist: {sorted(set(FLOORS) - modules)}"
    assert set(FLOORS.values()) <= set(ORDER)


def test_every_import_names_a_module_that_exists():
    modules = package_modules()
    graph = import_graph()
    missing = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if b not in modules]
    assert not missing


def test_no_import_reaches_up_a_floor():
    upward = upward_imports(import_graph())
    print(f"upward: {len(upward)}")
    assert not upward, "imports from a lower floor up to a higher one:\n" + "\n".join(upward)


def test_no_import_circles():
    found = circles(import_graph())
    print(f"circles: {len(found)}")
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_see_what_they_look_for():
    """The graph reader finds lazy imports and relative ones, skips TYPE_CHECKING, and the checks fire."""
    graph = import_graph()
    assert "hubstyle.facts" in graph["hubstyle.card"]  # a top-level import
    assert "hubstyle.models" in graph["hubstyle.evaluate.answers"]  # an import inside a function
    assert "hubstyle.export" not in graph["hubstyle.card"]  # under `if TYPE_CHECKING:` only
    assert "hubstyle.restyle.model" in graph["hubstyle.restyle"]  # `from hubstyle.restyle import model`
    bad = {"hubstyle.config": {"hubstyle.release": 1}, "hubstyle.release": {"hubstyle.config": 1}}
    assert upward_imports(bad) == ["hubstyle.config (config) -> hubstyle.release (publish), line 1"]
    assert ["hubstyle.config", "hubstyle.release"] in circles(bad)


def architecture_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Architecture\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Architecture' section"
    return section.group(1).replace("\n  ", " ")  # an item's wrapped lines joined


def readme_floors() -> dict[str, str]:
    """Return {module: floor} as README.md's Architecture section lists them (`data.*`: a package and its modules)."""
    modules = package_modules()
    listed: dict[str, str] = {}
    for floor, names in re.findall(r"^- \*\*([a-z]+)\*\*: (.*)$", architecture_section(), re.M):
        for short in re.findall(r"`([a-z0-9_.*]+)`", names.split(" — ")[0]):
            full = "hubstyle" if short == "hubstyle" else f"hubstyle.{short}"
            if full.endswith(".*"):
                package = full[:-2]
                for name in modules:
                    if (name == package or name.startswith(package + ".")) and name not in listed:
                        listed[name] = floor
            else:
                listed[full] = floor
    return listed


def test_the_readme_says_the_same():
    listed = readme_floors()
    floors = re.findall(r"^- \*\*([a-z]+)\*\*:", architecture_section(), re.M)
    assert floors == list(reversed(ORDER)), "README.md's Architecture section: one item a floor, top down"
    differ = {m: (listed.get(m), f) for m, f in FLOORS.items() if listed.get(m) != f}
    assert not differ, f"README.md's Architecture section and FLOORS differ (readme, test): {differ}"
    assert set(listed) == set(FLOORS)


# --------------------------------------------------------------------------------------------------- one answer each


def defined_names(path: Path) -> dict[str, ast.AST]:
    """Return the top-level functions, classes and assigned names of a module, by name."""
    found: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


# The answers to questions several modules ask, each defined once (issue 25): the module that owns each name.
ONE_ANSWER = {
    "is_local_path": "hubstyle.repo_ids",  # a local path or a Hub id?
    "check_repo_id": "hubstyle.repo_ids",  # the repo-id rules
    "PICKLE_SUFFIXES": "hubstyle.layout",
    "TOKENIZER_FILES": "hubstyle.layout",
    "quiet": "hubstyle.env",
    "atomic_write": "hubstyle.fsio",
    "atomic_file": "hubstyle.fsio",
    "atomic_folder": "hubstyle.fsio",
    "file_sha256": "hubstyle.fsio",
    "CONFUSION_FILE": "hubstyle.layout",
    "PRETRAIN_REPORT": "hubstyle.layout",
    "TINY_BASE": "hubstyle.config",
    "RELEASE_KINDS": "hubstyle.config",
    "SCRIPT_FORMATS": "hubstyle.config",
}


def test_each_shared_answer_is_defined_once():
    modules = package_modules()
    owners = {name: sorted(m for m, p in modules.items() if m not in SPACE_RUNTIME and name in defined_names(p))
              for name in ONE_ANSWER}
    assert owners == {name: [owner] for name, owner in ONE_ANSWER.items()}


def test_config_knows_every_named_corpus():
    """config validates corpus names against CORPUS_NAMES without importing the data floor; the corpora are those."""
    config = defined_names(PACKAGE / "config.py")["CORPUS_NAMES"]
    sources = defined_names(PACKAGE / "data" / "sources.py")["NAMED_CORPORA"]
    assert set(ast.literal_eval(config.value)) == {ast.literal_eval(k) for k in sources.value.keys}


def test_no_module_spells_the_local_path_rule_itself():
    """'starts with . / ~' is the local-path rule: only hubstyle.repo_ids may spell it."""
    spelled = [f"{m}: line {n}" for m, p in package_modules().items() if m != "hubstyle.repo_ids"
               for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"""startswith\(\(\s*["']\.["'],\s*["']/["'],\s*["']~["']""", line)]
    assert not spelled


# --------------------------------------------------------------------------------------------------- the Space's copies

# The Space's runtime modules (copied into every Space folder) and, per copy, the runtime module that holds it.
SPACE_RUNTIME = ("hubstyle.space", "hubstyle.space_settings", "hubstyle.space_models")
SPACE_HOLDER = {"device": "hubstyle.space_models", "bf16_supported": "hubstyle.space_models",
                "context_length": "hubstyle.space_models", "BASE_ADAPTER_NAME": "hubstyle.space_settings",
                "PLAIN_USER": "hubstyle.space_settings", "PLAIN_ASSISTANT": "hubstyle.space_settings",
                "DEMO_TABLE_FILE": "hubstyle.space_settings"}
# The Space's copy -> the package's original (module, name). The Space cannot import hubstyle, so it copies these.
SPACE_COPIES = {
    "device": ("hubstyle.models", "device"),
    "bf16_supported": ("hubstyle.models", "bf16_supported"),
    "context_length": ("hubstyle.models", "context_length"),
}
SPACE_CONSTANTS = {
    "BASE_ADAPTER_NAME": ("hubstyle.models", "BASE_ADAPTER_NAME"),
    "PLAIN_USER": ("hubstyle.chat", "PLAIN_USER"),
    "PLAIN_ASSISTANT": ("hubstyle.chat", "PLAIN_ASSISTANT"),
    "DEMO_TABLE_FILE": ("hubstyle.layout", "DEMO_TABLE"),
}


def _code(node: ast.AST) -> str:
    """Return a function's signature and body as an AST dump, without its name and docstring (those may differ)."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return ast.dump(node)
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
            body[0].value.value, str):
        body = body[1:]
    return ast.dump(ast.Module(body=[*body], type_ignores=[])) + ast.dump(node.args) + ast.dump(node.returns or
                                                                                                 ast.Constant(None))


def _value(node: ast.AST, name: str):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):  # A, B = "a", "b"
        names = [t.id for t in node.targets[0].elts]
        return ast.literal_eval(node.value.elts[names.index(name)])
    return ast.literal_eval(node.value)


def _names_with_tuples(path: Path) -> dict[str, ast.AST]:
    found = defined_names(path)
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            for elt in node.targets[0].elts:
                found[elt.id] = node
    return found


@pytest.mark.parametrize("copy", sorted(SPACE_COPIES))
def test_the_space_copies_functions_verbatim(copy):
    modules = package_modules()
    module, name = SPACE_COPIES[copy]
    original = defined_names(modules[module])[name]
    space = defined_names(modules[SPACE_HOLDER[copy]])[copy]
    assert _code(space) == _code(original), f"{SPACE_HOLDER[copy]}'s {copy} drifted from {module}.{name}: copy it again"


@pytest.mark.parametrize("copy", sorted(SPACE_CONSTANTS))
def test_the_space_copies_constants_verbatim(copy):
    modules = package_modules()
    module, name = SPACE_CONSTANTS[copy]
    original = _value(_names_with_tuples(modules[module])[name], name)
    assert _value(_names_with_tuples(modules[SPACE_HOLDER[copy]])[copy], copy) == original


def test_every_function_the_space_shares_a_name_with_is_a_checked_copy():
    """A Space function named like a function of models.py or chat.py is a copy, and must be listed above."""
    modules = package_modules()
    space = {n for m in SPACE_RUNTIME for n, node in defined_names(modules[m]).items()
             if isinstance(node, ast.FunctionDef)}
    shared = {n for m in ("hubstyle.models", "hubstyle.chat") for n, node in defined_names(modules[m]).items()
              if isinstance(node, ast.FunctionDef)} & space
    assert shared <= set(SPACE_COPIES)


def test_the_space_error_is_hubstyles():
    """The Space's stand-in HubstyleError (without hubstyle installed) says what hubstyle's does."""
    modules = package_modules()
    original = defined_names(modules["hubstyle.errors"])["HubstyleError"]
    tree = ast.parse(modules["hubstyle.space_settings"].read_text(encoding="utf-8"))
    copies = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "HubstyleError"]
    assert copies and all(ast.dump(c) == ast.dump(original) for c in copies)
