"""The layout a reader relies on: imports go one way (no cycle, counting imports inside functions), models never
import their converters, and an import inside a function says why it is there.

The import graph is read from the source with `ast`, so it sees every import statement, wherever it is.
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folder -> the package it installs as: the repository's weights_convert/ is minispeechseq.weights_convert
# (setup.cfg's package_dir), so that is the name every import uses.
PACKAGES = {"minispeechseq": "minispeechseq", "weights_convert": "minispeechseq.weights_convert"}
CONVERTERS = PACKAGES["weights_convert"]
# The only modules that may import a converter: loading (modeling.py finds it by model_type), the pair (which
# reports what a warm start loaded) and the command line's `inspect`.
CONVERTER_USERS = {"minispeechseq.modeling", "minispeechseq.speech_encoder_decoder", "minispeechseq.tools.cli"}


def project_modules() -> dict[str, str]:
    """Dotted module name -> file path, for every .py file of the project's packages."""
    modules = {}
    for folder_name, package in PACKAGES.items():
        top = os.path.join(ROOT, folder_name)
        for folder, _, files in os.walk(top):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = [package, *os.path.relpath(path, top)[:-3].split(os.sep)]
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: str, modules: dict[str, str]) -> list[tuple[str, ast.stmt, bool]]:
    """(imported project module, the statement, whether it sits inside a function) for each import in `path`."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_package = path.endswith("__init__.py")
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import name` imports the submodule pkg.name when there is one, else pkg itself.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]  # `import a.b.c` of a name inside a.b
                if target in modules and target != module:
                    found.append((target, child, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: {t for t, _, _ in imports_of(m, p, modules)} for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    """The checker itself can fail: a three-module cycle, and an acyclic graph."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "minispeechseq.layers" in graph[f"{CONVERTERS}.speech2text2"]
    assert CONVERTERS in graph["minispeechseq.modeling"]


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_models_do_not_import_converters():
    graph = import_graph()
    offenders = sorted(
        m for m, targets in graph.items()
        if not m.startswith(CONVERTERS) and m not in CONVERTER_USERS
        and any(t.startswith(CONVERTERS) for t in targets)
    )
    assert not offenders, f"these modules import a converter (only {sorted(CONVERTER_USERS)} may): {offenders}"


def test_converters_import_no_model():
    """weights_convert may use minispeechseq.layers (a leaf: only torch), nothing that defines a model."""
    graph = import_graph()
    used = {t for m, targets in graph.items() if m.startswith(CONVERTERS) for t in targets
            if not t.startswith(CONVERTERS)}
    assert used <= {"minispeechseq.layers"}, f"converters import model modules: {sorted(used)}"
    assert not {t for t in graph["minispeechseq.layers"]}, "minispeechseq.layers must stay a leaf"


def test_imports_inside_functions_say_why():
    """An import inside a function is there for an optional dependency or for start-up time, and says which."""
    modules = project_modules()
    silent = []
    for module, path in modules.items():
        lines = open(path, encoding="utf-8").read().splitlines()
        tree = ast.parse("\n".join(lines), path)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    text = " ".join(lines[node.lineno - 1 : node.end_lineno])
                    if "#" not in text or not any(w in text.lower() for w in ("optional", "start-up")):
                        silent.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not silent, "imports inside functions without an 'optional' / 'start-up' comment:\n" + "\n".join(silent)


def test_pyflakes_finds_nothing():
    """ruff's pyflakes rules (unused imports, undefined names) and syntax errors, over the whole project."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the test extra: pip install -e '.[test]')")
    paths = [os.path.join(ROOT, p) for p in ("minispeechseq", "weights_convert", "tests", "tutorials")]
    done = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--select", "F,E9", *paths],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_converters_are_imported_under_one_name():
    """The installed package has no top-level `weights_convert` (setup.cfg maps the folder to
    minispeechseq.weights_convert), so code, tests and tutorials import it under that one name."""
    wrong = []
    for folder in ("minispeechseq", "weights_convert", "tests", "tutorials"):
        for path in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True):
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                wrong += [f"{os.path.relpath(path, ROOT)}:{node.lineno}" for n in names
                          if n == "weights_convert" or n.startswith("weights_convert.")]
    assert not wrong, f"imports of the top-level name weights_convert: {wrong}"


# ------------------------------------------------------------------------------------------- roles and arrows
# The package's top level is the reading list: the path from a waveform to text and the base classes it inherits
# from. The rest lives in folders named for their role, and the arrows between roles point one way:
#   common/, files/  <-  the reading path  <-  recognition/  <-  training/  <-  tools/
# (common/ and files/ serve everyone; tools/ is the top, which only the `python -m minispeechseq` entry imports).
PACKAGE = "minispeechseq"
TOOLS, RECOGNITION, TRAINING = f"{PACKAGE}.tools", f"{PACKAGE}.recognition", f"{PACKAGE}.training"
ROLE_FOLDERS = {"common", "files", "recognition", "tools", "training", "weights_convert"}
MAX_TOP_LEVEL_MODULES = 16


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def reading_path(modules) -> list[str]:
    """The top-level modules and the decoders/ and generation/ packages: everything but the role folders. Left
    out: the package's __init__, the public surface, which re-exports `transcribe` and `quantize` from
    recognition/ on purpose (API.md), and __main__, the command's entry (`python -m minispeechseq`)."""
    return sorted(m for m in modules if m not in (PACKAGE, f"{PACKAGE}.__main__") and under(m, PACKAGE)
                  and m.split(".")[1] not in ROLE_FOLDERS)


def test_the_top_level_is_short_and_in_the_readme_reading_table():
    names = sorted(n for n in os.listdir(os.path.join(ROOT, PACKAGE)) if n.endswith(".py"))
    assert len(names) <= MAX_TOP_LEVEL_MODULES, f"{len(names)} top-level modules (at most {MAX_TOP_LEVEL_MODULES}): " \
        "move what is not on the reading path into a role folder"
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = readme[readme.index("## Reading the code"):]
    table = table[:table.index("\n## ", 1)]
    missing = [n for n in names if n not in ("__init__.py", "__main__.py") and n not in table]
    assert not missing, f"top-level modules the README's reading table does not list: {missing}"


def test_the_role_folders_exist():
    folders = {n for n in os.listdir(os.path.join(ROOT, PACKAGE)) if os.path.isfile(os.path.join(ROOT, PACKAGE, n,
                                                                                                "__init__.py"))}
    assert {"common", "files", "recognition", "tools", "training"} <= folders, sorted(folders)


def test_nothing_imports_the_tools():
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items()
                       if not under(m, TOOLS) and m != f"{PACKAGE}.__main__" for t in targets if under(t, TOOLS))
    assert not offenders, f"only tools/ itself and __main__ may import tools/: {offenders}"


def test_the_reading_path_imports_neither_recognition_nor_training():
    graph = import_graph()
    path = reading_path(graph)
    assert {f"{PACKAGE}.wav2vec2", f"{PACKAGE}.modeling", f"{PACKAGE}.generation.loop"} <= set(path)
    offenders = sorted(f"{m} -> {t}" for m in path for t in graph[m]
                       if any(under(t, p) for p in (RECOGNITION, TRAINING, TOOLS)))
    assert not offenders, f"the reading path imports an application, training or a tool: {offenders}"


def test_files_import_nothing_above_them():
    """files/ (and common/) serve everyone, so they import no other part of the package: the config base, the
    extractor and the tokenizer read untrusted files through files/readers.py, not the other way round."""
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items()
                       if under(m, f"{PACKAGE}.files") or under(m, f"{PACKAGE}.common")
                       for t in targets if not under(t, f"{PACKAGE}.files") and not under(t, f"{PACKAGE}.common"))
    assert not offenders, f"files/ or common/ imports the package above it: {offenders}"


def test_training_imports_no_command_line_module():
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() if under(m, TRAINING)
                       for t in targets if under(t, TOOLS))
    assert not offenders, f"training/ imports a tool (its programs share common/arguments.py instead): {offenders}"


def test_the_model_base_imports_no_application():
    """modeling.py is every model's base class: int8 reaches it through the QUANTIZERS table it defines, which
    recognition/quantize.py fills, not through an import."""
    graph = import_graph()
    base = f"{PACKAGE}.modeling"
    applications = sorted(t for t in graph[base] if any(under(t, p) for p in (RECOGNITION, TRAINING, TOOLS)))
    assert not applications, f"modeling.py imports {applications}"
    from minispeechseq.modeling import QUANTIZERS
    assert set(QUANTIZERS) == {"int8", "int8-all"}, "recognition/quantize.py registers the int8 modes"


def test_the_arrow_checks_can_fail():
    """The prefix test is not fooled by a shared start of a name, and the reading path excludes the roles."""
    assert under(f"{TOOLS}.cli", TOOLS) and under(TOOLS, TOOLS) and not under(f"{PACKAGE}.toolsmith", TOOLS)
    path = reading_path([PACKAGE, f"{PACKAGE}.__main__", f"{PACKAGE}.audio", f"{TOOLS}.cli", f"{PACKAGE}.generation.loop",
                         f"{PACKAGE}.weights_convert.core"])
    assert path == [f"{PACKAGE}.audio", f"{PACKAGE}.generation.loop"]
