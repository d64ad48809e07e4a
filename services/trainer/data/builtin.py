"""Built-in corpora that need no download.

"python-docstrings": the docstrings of a fixed list of standard-library modules
(module, public classes, functions and methods), read with `inspect`. The list
is fixed so the corpus is the same on every machine with the same Python, and
excludes modules with import side effects (`this`, `antigravity`, GUI ...).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

_STDLIB_MODULES = (
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "colorsys",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
)


def _docstrings(module_name: str) -> Iterator[tuple[str, str]]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    seen: set[int] = set()

    def visit(qualname: str, obj: object, depth: int) -> Iterator[tuple[str, str]]:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        doc = inspect.getdoc(obj)
        if doc:
            yield qualname, doc
        if depth >= 2 or not (inspect.ismodule(obj) or inspect.isclass(obj)):
            return
        for name, member in sorted(vars(obj).items()):
            if name.startswith("_"):
                continue
            if inspect.ismodule(obj) and getattr(member, "__module__", None) != obj.__name__:
                continue
            if inspect.isclass(member) or inspect.isroutine(member):
                yield from visit(f"{qualname}.{name}", member, depth + 1)

    yield from visit(module_name, module, 0)


def python_docstrings() -> Iterator[tuple[str, str]]:
    for module_name in _STDLIB_MODULES:
        yield from _docstrings(module_name)


BUILTIN_SOURCES = {"python-docstrings": python_docstrings}


def builtin_documents(name: str) -> Iterator[tuple[str, str]]:
    """(origin, text) pairs of the named built-in corpus."""
    yield from BUILTIN_SOURCES[name]()
