"""The "never" rules of ARCHITECTURE.md, checked on the imports of every module (ast).

Every ``import`` counts, at the top of a module or inside a function: a lazy import is
still a dependency. Also: module docstrings stay a few lines (the story is in READMEs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("smolfs", "kstrip", "launcher", "services")
NETWORK = ("requests", "urllib", "http", "socket", "ssl")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


MODULES = all_modules()


def imports(name: str) -> set[str]:
    """What module *name* imports: full dotted names (``from a import b`` gives ``a.b``
    when that is a module, else ``a``), relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in MODULES else base)
    return out


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(sources: tuple[str, ...], forbidden: tuple[str, ...],
              allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{m} imports {i}" for m in MODULES if under(m, *sources)
                  for i in imports(m) if under(i, *forbidden) and not under(i, *allowed))


def test_every_module_is_seen() -> None:
    assert "smolfs.fs.ffs.writer" in MODULES and "launcher.vm" in MODULES
    assert imports("smolfs.fs.ffs.writer") >= {"smolfs.fs.tree", "smolfs.errors"}


def test_filesystem_writers_import_no_sets_network_or_launcher() -> None:
    assert offenders(("smolfs.fs",), ("smolfs.sets", "smolfs.image", "smolfs.pkg",
                                      "smolfs.cli", "launcher", "kstrip", *NETWORK)) == []


def test_kstrip_is_independent_of_the_writers_and_the_launcher() -> None:
    assert offenders(("kstrip",), ("launcher", "smolfs"),
                     allowed=("smolfs.errors", "smolfs.log", "smolfs.fileutil",
                              "smolfs.cli")) == []


def test_the_library_never_imports_its_cli() -> None:
    library = [m for m in MODULES if under(m, "smolfs")
               and not under(m, "smolfs.cli", "smolfs.__main__")]
    assert sorted(f"{m} imports {i}" for m in library for i in imports(m)
                  if under(i, "smolfs.cli", "smolfs.__main__")) == []


def test_smolfs_never_imports_the_launcher_or_kstrip() -> None:
    assert offenders(("smolfs",), ("launcher", "kstrip")) == []


def test_sets_do_not_reach_up_into_images() -> None:
    assert offenders(("smolfs.sets",), ("smolfs.image", "smolfs.cli")) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", ["smolfs", "kstrip", "launcher"])
def test_no_import_cycle(package: str) -> None:
    """A package's ``__init__`` that re-exports its own modules is not a cycle: edges to
    a package itself are left out, those to its modules count."""
    names = [m for m in MODULES if under(m, package)]
    packages = {m for m in names if MODULES[m].name == "__init__.py"}
    graph = {m: {i for i in imports(m) if i in names and i != m and i not in packages}
             for m in names}
    assert _cycles(graph) == []


def test_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


#: The longest module docstring, in lines, in smolfs/, kstrip/ and launcher/: a module
#: says what it owns and its one promise; the design story goes to its package's README.
DOCSTRING_LINES = 12
#: Modules allowed over the limit, each capped at its length (none now: keep it so).
LONG_DOCSTRINGS: dict[str, int] = {}
#: The longest module, in lines, in smolfs/, kstrip/ and launcher/: one idea per module.
MODULE_LINES = 420


def test_modules_hold_one_idea() -> None:
    """No module grows past :data:`MODULE_LINES`: split it by idea inside its package."""
    too_long = [f"{path.relative_to(REPO)}: {n} lines, at most {MODULE_LINES}"
                for name, path in MODULES.items()
                if under(name, "smolfs", "kstrip", "launcher")
                and (n := len(path.read_text().splitlines())) > MODULE_LINES]
    assert too_long == []


def docstring_lines(path: Path) -> int:
    doc = ast.get_docstring(ast.parse(path.read_text(), str(path)), clean=False)
    return len(doc.strip().splitlines()) if doc else 0


def test_module_docstrings_are_short() -> None:
    too_long = []
    for name, path in MODULES.items():
        if under(name, "smolfs", "kstrip", "launcher"):
            limit = LONG_DOCSTRINGS.get(name, DOCSTRING_LINES)
            if (n := docstring_lines(path)) > limit:
                too_long.append(f"{path.relative_to(REPO)}: {n} lines, at most {limit}: "
                                "keep what the module owns, move the story to the README")
    assert too_long == []


def test_docstring_limit_counts_lines_and_its_exceptions_exist(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text('"""One.\n\n' + "line\n" * 11 + '"""\n\nX = 1\n')
    assert docstring_lines(long) == 13 > DOCSTRING_LINES
    (tmp_path / "none.py").write_text("X = 1\n")
    assert docstring_lines(tmp_path / "none.py") == 0
    assert sorted(set(LONG_DOCSTRINGS) - set(MODULES)) == []


#: What starts a process: these calls (or their import by name) are made only by the two
#: doors to external programs and what they own.
PROCESS_CALLS = (
    *(f"os.{f}" for f in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system",
                          "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle",
                          "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
                          "spawnl", "spawnle", "spawnlp", "spawnlpe")),
    *(f"subprocess.{f}" for f in ("Popen", "run", "call", "check_call", "check_output",
                                  "getoutput", "getstatusoutput")),
    "pty.fork", "pty.spawn", "_posixsubprocess.fork_exec",
    "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell", "multiprocessing",
)
#: Who may make them, and which: ``smolfs.spawn`` starts every long-lived child (QEMU,
#: a detached VM's QEMU); ``smolfs.run`` runs a program to its end, contained ones under
#: ``smolfs.guard`` (which forks and execs the program); the keeper of a detached VM is a
#: fork of the launcher that runs no other program itself (it starts QEMU by spawn() or
#: spawn_in_group()).
PROCESS_DOORS = {
    "smolfs.spawn": {"os.fork", "os.execv", "os.posix_spawn"},
    "smolfs.run": {"subprocess.run", "subprocess.Popen"},
    "smolfs.guard": {"os.fork", "os.execvp"},
    "launcher.keeper": {"os.fork"},
}


def process_calls(name: str) -> set[str]:
    """The :data:`PROCESS_CALLS` module *name* makes: ``os.fork()`` (or through an alias,
    ``import subprocess as sp``), or a name imported from one (``from os import fork``)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.partition(".")[0]] = (
                    alias.name if alias.asname else alias.name.partition(".")[0])
                if under(alias.name, "multiprocessing"):
                    found.add("multiprocessing")
        elif isinstance(node, ast.ImportFrom) and not node.level:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if dotted in PROCESS_CALLS or under(node.module or "", "multiprocessing"):
                    found.add(dotted if dotted in PROCESS_CALLS else "multiprocessing")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{aliases.get(node.value.id, node.value.id)}.{node.attr}"
            if dotted in PROCESS_CALLS:
                found.add(dotted)
    return found


def test_programs_are_started_only_through_the_two_doors() -> None:
    """ARCHITECTURE.md: a program is run to its end by ``smolfs.run.run()`` and started
    for long by ``smolfs.spawn.spawn()`` (which ``smolfs.run.spawn()`` and the launcher
    use); nothing else forks, execs or calls subprocess."""
    made = {m: calls for m in MODULES if (calls := process_calls(m))}
    assert made == PROCESS_DOORS


def test_process_calls_are_seen_through_aliases_and_imported_names(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.py"
    path.write_text("import subprocess as sp\nfrom os import posix_spawn\nimport os\n"
                    "def go():\n    sp.Popen(['x'])\n    os.execvp('x', ['x'])\n")
    MODULES["sneaky"] = path
    try:
        assert process_calls("sneaky") == {"subprocess.Popen", "os.posix_spawn", "os.execvp"}
    finally:
        del MODULES["sneaky"]
