"""What an attacker who can write a checkpoint does to it: one dataclass per kind of change.

Each mutation is plain data (so hypothesis can print and replay it) with
``apply(ctx) -> str``, which changes the case's copy and returns a one-line
description of what it did (raising :class:`NotApplicable` when the copy
offers nothing to change, e.g. an edit of a key that an earlier mutation
deleted). Three more members say how a case is run:

- ``phase``: ``"file"`` mutations run before the manifest is re-hashed,
  ``"manifest"`` ones after it (so a lie in the manifest stays a lie);
- :meth:`Mutation.expect`: what a resume of the newest checkpoint must do:
  ``"benign"`` (resume, restoring exactly the original arrays), ``"refuse"``
  (a one-line UserError, or a fallback to another checkpoint) or ``"either"``
  (a refusal, or a resume that restores exactly what the files hold);
- :meth:`Mutation.touches_newest`: whether it changes the newest checkpoint at
  all (a change elsewhere must leave its resume exact).

This module covers JSON and YAML files (structure, types, values, raw text),
the file system (symlinks, FIFOs, directories, large files), pointers and the
run directory; ``trainer.fuzz.h5`` covers HDF5. No TensorFlow here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.checkpoint.layout import (
    CONFIG_FILE,
    MANIFEST,
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
)
from trainer.fuzz.canary import MODULE, RESOLVER, SECRET_ENV, Canary
from trainer.fuzz.source import CaseDirs

LARGE_BYTES = 32 << 20  # past every reader's limit, small enough to read whole without harm


class NotApplicable(Exception):
    """This mutation has nothing to change in this copy; the case is skipped."""


@dataclass(frozen=True)
class Context:
    """What a mutation works on: the case's copy and the canary its payloads aim at."""

    dirs: CaseDirs
    canary: Canary

    def fill(self, template: str) -> str:
        """A payload template with the canary's tripwires (``{command}``, ...) and the big
        values (``{long_string}``, ``{deep_list}``, ``{long_number}``) filled in."""
        return template.format(
            command=self.canary.command("os-system"),
            python=self.canary.python("exec"),
            module=MODULE,
            resolver=RESOLVER,
            secret_env=SECRET_ENV,
            long_string="x" * 2_000_000,  # past every size limit
            deep_list="[" * 100_000 + "]" * 100_000,  # past every recursion limit
            long_number="1" + "0" * 5000,  # past Python's int-from-text limit
        )


@dataclass(frozen=True)
class Mutation:
    """A change to one case's copy; see the module docstring."""

    phase = "file"

    def apply(self, ctx: Context) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def expect(self) -> str:
        return "either"

    def touches_newest(self) -> bool:
        """Whether it changes the newest checkpoint (else a resume of it must be unaffected)."""
        return getattr(self, "where", "newest") == "newest"


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Raw:
    """Text spliced verbatim into a JSON or YAML file where a value goes (a template for
    :meth:`Context.fill`)."""

    text: str
    executes: bool = False  # a payload that runs code if the reader constructs it


# YAML a checkpoint may hold where a value goes. Every tag and interpolation here
# must stay inert: the canary says whether one ran.
YAML_PAYLOADS = (
    Raw('!!python/object/apply:os.system ["{command}"]', executes=True),
    Raw('!!python/object/apply:builtins.exec ["{python}"]', executes=True),
    Raw("!!python/object/new:{module}.Canary []", executes=True),
    Raw("!!python/name:{module}.run", executes=True),
    Raw("!!python/module:{module}", executes=True),
    Raw('{{_target_: os.system, _args_: ["{command}"]}}', executes=True),
    Raw('{{_target_: builtins.exec, _args_: ["{python}"]}}', executes=True),
    Raw("{{_target_: {module}.run, _partial_: true}}", executes=True),
    Raw('"${{oc.env:{secret_env}}}"'),
    Raw('"${{oc.env:{secret_env},fallback}}"'),
    Raw('"${{{resolver}:interpolated}}"'),
    Raw('"prefix-${{{resolver}:nested}}-suffix"'),
    Raw("\"${{oc.decode:'[1, 2]'}}\""),
    Raw('"${{oc.create:{{a: 1}}}}"'),
    Raw('"${{..name}}"'),
    Raw('"${{${{{resolver}:inner}}}}"'),
    Raw("!!binary aGVsbG8="),
    Raw("!!set {{a: null, b: null}}"),
    Raw("!!omap [a: 1, b: 2]"),
    Raw("!!pairs [a: 1, a: 2]"),
    Raw("2001-12-14t21:59:43.10-05:00"),
    Raw("2001-12-14"),
    Raw(".nan"),
    Raw("-.inf"),
    Raw("!!float 1e400"),
    Raw("0x7fffffffffffffffffffffff"),
    Raw("1_000"),
    Raw("0o17"),
    Raw("*undefined_alias"),
    Raw("&self [*self]"),
    Raw("{{? [a, b] : c}}"),
    Raw("{{1: a, 2.5: b, null: c, true: d}}"),
    Raw("{{<<: {{name: cnn}}, extra: 1}}"),
    Raw("!!str"),
    Raw("~"),
    Raw('"{long_string}"'),
    Raw("{deep_list}"),
    Raw("!custom_tag value"),
    Raw("[{module}]"),
)

JSON_PAYLOADS = (
    Raw("NaN"),
    Raw("-Infinity"),
    Raw("1e999"),
    Raw("-0"),
    Raw("{long_number}"),
    Raw("{deep_list}"),
    Raw('{{"a": 1, "a": 2}}'),
    Raw('"\\ud800"'),
    Raw('"{long_string}"'),
)


def node_paths(node: Any, prefix: tuple = (), seen: frozenset = frozenset()) -> list[tuple]:
    """Every path to a value in a parsed document, depth first, in document order (a
    container reached again through a YAML alias is not entered twice)."""
    if isinstance(node, dict):
        items: Any = node.items()
    else:
        items = enumerate(node) if isinstance(node, list) else ()
    if id(node) in seen or len(prefix) > 50:
        return []
    found: list[tuple] = []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(node_paths(value, (*prefix, key), seen | {id(node)}))
    return found


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "<document>"


def retyped(value: Any, kind: str) -> Any:
    """``value`` turned into a value of another type, or a boundary of its own type."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    changes = {
        "str": str(value),
        "list": [value],
        "dict": {"value": value},
        "null": None,
        "bool": not value if isinstance(value, bool) else True,
        "float": float(value) + 0.5 if number else 0.5,
        "negative": -value - 1 if number else -1,
        "huge": value * 10**30 + 10**30 if number else 10**30,
        "nan": math.nan,
        "inf": math.inf,
        "zero": 0,
        "empty": type(value)() if isinstance(value, str | list | dict) else "",
    }
    return changes[kind]


RETYPES = (
    "str",
    "list",
    "dict",
    "null",
    "bool",
    "float",
    "negative",
    "huge",
    "nan",
    "inf",
    "zero",
    "empty",
)


@dataclass(frozen=True)
class EditDocument(Mutation):
    """A structural edit of a JSON or YAML file: set, retype, delete or add a value.
    ``pick`` chooses the node among the document's paths (modulo their number), or
    names it (``"loop.best"``; ``""`` is the document itself, for ``add``)."""

    file: str
    op: str  # set | retype | delete | add
    pick: int | str = 0
    value: Any = None  # for set/add/replace: a value, or a Raw payload; for retype: a RETYPES kind
    key: Any = "extra"
    where: str = "newest"

    @property
    def phase(self) -> str:  # type: ignore[override]
        return "manifest" if self.file == MANIFEST else "file"

    def expect(self) -> str:
        if self.file == CONFIG_FILE and isinstance(self.value, Raw) and self.value.executes:
            return "refuse"  # a python tag fails safe YAML; a _target_ is refused wherever it is
        return "either"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.checkpoint(self.where) / self.file
        doc = _load(path)
        try:
            target = self._apply_to(doc)
        except (TypeError, KeyError, IndexError):  # keys that collide (1 and True in YAML)
            raise NotApplicable(f"{self.file}: no place for {self.op}") from None
        _dump(path, doc, ctx)
        return f"{self.where} {self.file}: {target}"

    def _apply_to(self, doc: Any) -> str:
        paths = node_paths(doc)
        if self.op == "add":
            containers = [()] + [p for p in paths if isinstance(_get(doc, p), dict | list)]
            where = self._choose(containers)
            node = _get(doc, where)
            if isinstance(node, list):
                at = self.pick if isinstance(self.pick, int) else 0
                node.insert(at % (len(node) + 1), self.value)
            else:
                node[self.key] = self.value
            return f"add {short(self.key)} = {short(self.value)} under {dotted(where)}"
        if not paths:
            raise NotApplicable("the document has no values")
        where = self._choose(paths)
        parent = _parent(doc, where)
        if self.op == "delete":
            del parent[where[-1]]
            return f"delete {dotted(where)}"
        new = retyped(parent[where[-1]], self.value) if self.op == "retype" else self.value
        parent[where[-1]] = new
        return f"{self.op} {dotted(where)} to {short(new)}"

    def _choose(self, paths: list[tuple]) -> tuple:
        if isinstance(self.pick, int):
            return paths[self.pick % len(paths)]
        named = [p for p in paths if (dotted(p) if p else "") == self.pick]
        if not named:
            raise NotApplicable(f"{self.file} has no {self.pick!r}")
        return named[0]


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def read_bytes(path: Path) -> bytes:
    """The bytes of a regular file; NotApplicable if an earlier mutation made it something
    else (a FIFO is never opened: that would block)."""
    if not path.is_file():
        raise NotApplicable(f"{path.name} is no longer a regular file")
    return path.read_bytes()


def _load(path: Path) -> Any:
    """The parsed document; NotApplicable if an earlier mutation made it unparseable."""
    import yaml

    try:
        text = read_bytes(path).decode()
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as error:
        raise NotApplicable(f"{path.name} no longer parses: {str(error)[:80]}") from None
    if not _is_tree(doc):
        raise NotApplicable(f"{path.name} shares nodes (YAML aliases): not edited further")
    return doc


def _is_tree(doc: Any, limit: int = 100_000) -> bool:
    """Whether no container is reached twice (aliases, cycles) and the document is small."""
    seen: set[int] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            if id(node) in seen or len(seen) > limit:
                return False
            seen.add(id(node))
            stack.extend(node.values() if isinstance(node, dict) else node)
    return True


class _Document:
    """Serialise a document holding Raw payloads: each becomes a placeholder, replaced by
    its text once the rest is dumped (neither json nor yaml writes raw text)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.raws: dict[str, str] = {}

    def plain(self, node: Any) -> Any:
        if isinstance(node, Raw):
            name = f"fuzz_raw_{len(self.raws)}_placeholder"
            self.raws[name] = self.ctx.fill(node.text)
            return name
        if isinstance(node, dict):
            return {self.plain(k): self.plain(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.plain(v) for v in node]
        return node

    def splice(self, text: str, quote: str) -> str:
        for name, raw in self.raws.items():
            text = text.replace(f"{quote}{name}{quote}", raw).replace(name, raw)
        return text


def _dump(path: Path, doc: Any, ctx: Context) -> None:
    writer = _Document(ctx)
    plain = writer.plain(doc)
    if path.suffix == ".json":
        text = writer.splice(json.dumps(plain, indent=2, allow_nan=True), '"')
    else:
        import yaml

        text = writer.splice(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True), "")
    path.write_text(text, errors="surrogatepass")


@dataclass(frozen=True)
class ReplaceDocument(Mutation):
    """The whole file replaced by another document (any JSON/YAML value, or a payload)."""

    file: str
    value: Any
    where: str = "newest"

    @property
    def phase(self) -> str:  # type: ignore[override]
        return "manifest" if self.file == MANIFEST else "file"

    def expect(self) -> str:
        if self.file == CONFIG_FILE and isinstance(self.value, Raw) and self.value.executes:
            return "refuse"
        return "either"

    def apply(self, ctx: Context) -> str:
        _dump(ctx.dirs.checkpoint(self.where) / self.file, self.value, ctx)
        return f"{self.where} {self.file}: replaced by {short(self.value)}"


@dataclass(frozen=True)
class LieInManifest(Mutation):
    """One entry of the manifest's file list says something untrue: a size or a hash of
    the wrong value or type, or a listed name that is not a plain file of the checkpoint."""

    name: str
    size: Any = 0
    sha256: Any = "0" * 64
    keep: str = ""  # "size" or "sha256": leave that field as the real one

    phase = "manifest"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.newest / MANIFEST
        manifest = _load(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise NotApplicable("the manifest has no file list")
        entry = dict(manifest["files"].get(self.name) or {})
        if self.keep != "size":
            entry["size"] = self.size
        if self.keep != "sha256":
            entry["sha256"] = self.sha256
        manifest["files"][self.name] = entry
        _dump(path, manifest, ctx)
        return f"newest {MANIFEST}: files[{short(self.name, 30)}] = {short(entry)}"


# --------------------------------------------------------------------------- raw text


def _billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + f"\nmodel: *a{levels}\n"


@dataclass(frozen=True)
class RawText(Mutation):
    """A change to a text file's bytes, whatever it parses to.

    ``kind``: truncate (to ``amount`` per mille), garbage (``data`` at byte
    ``amount``), empty, non_utf8, nul, bom, huge (valid, padded past any limit),
    deep (``amount`` nested lists), duplicate_key, and for YAML only:
    billion_laughs (``amount`` levels of ten), multi_document, tag_directive,
    python_document, recursive_anchor, tabs.
    """

    file: str
    kind: str
    amount: int = 0
    data: bytes = b""
    where: str = "newest"

    @property
    def phase(self) -> str:  # type: ignore[override]
        return "manifest" if self.file == MANIFEST else "file"

    def expect(self) -> str:
        return "refuse" if self.kind in ("tag_directive", "python_document") else "either"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.checkpoint(self.where) / self.file
        original = read_bytes(path)
        path.write_bytes(self._changed(original, ctx, path.suffix == ".json"))
        detail = f" ({self.amount})" if self.amount else ""
        return f"{self.where} {self.file}: raw {self.kind}{detail}"

    def _changed(self, original: bytes, ctx: Context, is_json: bool) -> bytes:
        kind, amount = self.kind, self.amount
        if kind == "truncate":
            return original[: len(original) * (amount % 1000) // 1000]
        if kind == "garbage":
            at = amount % (len(original) + 1)
            return original[:at] + (self.data or b"\xff") + original[at + len(self.data or b"x") :]
        if kind == "empty":
            return b""
        if kind == "non_utf8":
            return original.replace(b"e", b"\xe9", 1) + b"\xc3\x28"
        if kind == "nul":
            return original.replace(b"\n", b"\n\x00", 1)
        if kind == "bom":
            return b"\xef\xbb\xbf" + original
        if kind == "huge":
            padding = b" " * LARGE_BYTES if is_json else b"#" + b"x" * LARGE_BYTES + b"\n"
            return padding + original if not is_json else original[:1] + padding + original[1:]
        if kind == "deep":
            depth = max(amount, 1)
            nested = b"[" * depth + b"]" * depth
            return (b'{"deep": ' + nested + b"}") if is_json else b"deep: " + nested + b"\n"
        if kind == "duplicate_key":
            if is_json:
                return original.rstrip().rstrip(b"}") + b', "global_step": "again", "loop": 7}'
            return original + b"model: duplicated\n"
        if is_json:
            raise NotApplicable(f"{kind} is a YAML mutation")
        return self._yaml(original, ctx)

    def _yaml(self, original: bytes, ctx: Context) -> bytes:
        kind = self.kind
        if kind == "billion_laughs":
            return _billion_laughs(2 + self.amount % 8).encode() + original
        if kind == "multi_document":
            return original + b"---\nmodel: {name: other}\n"
        if kind == "tag_directive":
            payload = ctx.fill('x: !p!object/apply:os.system ["{command}"]\n').encode()
            return b"%TAG !p! tag:yaml.org,2002:python/\n---\n" + original + payload
        if kind == "python_document":
            return ctx.fill('!!python/object/apply:os.system ["{command}"]\n').encode()
        if kind == "recursive_anchor":
            return original + b"loop: &loop {again: *loop}\n"
        if kind == "tabs":
            return original.replace(b"  ", b"\t")
        raise NotApplicable(f"unknown raw kind {kind!r}")


# --------------------------------------------------------------------------- file system

CHECKPOINT_FILES = (MANIFEST, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE)
REPLACEMENTS = (
    "symlink_copy",  # a symlink to an identical copy outside the run
    "symlink_other",  # a symlink to the same file of the other checkpoint
    "symlink_secret",  # a symlink to a file outside the run that holds a secret
    "symlink_dangling",
    "symlink_loop",
    "symlink_dev_null",
    "symlink_dir",
    "symlink_fifo",
    "fifo",
    "directory",
    "large",  # the file extended (sparse) to LARGE_BYTES
    "empty",
)


def secret_file(ctx: Context) -> Path:
    """A file outside the run whose content must never appear in what a reader prints."""
    path = ctx.dirs.outside / "secret.txt"
    if not path.exists():
        path.write_text(f"{ctx.canary.file_secret}\n")
    return path


def fifo(ctx: Context) -> Path:
    path = ctx.dirs.outside / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return path


@dataclass(frozen=True)
class ReplaceFile(Mutation):
    """A file of a checkpoint (or a pointer of the run) replaced by something else."""

    file: str
    replacement: str
    where: str = "newest"  # newest | older | run (a pointer)

    @property
    def phase(self) -> str:  # type: ignore[override]
        return "manifest" if self.file == MANIFEST else "file"

    def apply(self, ctx: Context) -> str:
        base = ctx.dirs.run_dir if self.where == "run" else ctx.dirs.checkpoint(self.where)
        path = base / self.file
        _replace_path(path, self.replacement, ctx)
        return f"{self.where} {self.file}: replaced by {self.replacement}"


def _replace_path(path: Path, replacement: str, ctx: Context) -> None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise NotApplicable(f"{path.name} was already replaced")
    if replacement == "large":
        with open(path, "ab") as handle:
            handle.truncate(LARGE_BYTES)
        return
    if replacement == "empty":
        path.write_bytes(b"")
        return
    original = read_bytes(path) if path.is_file() else b""
    target: Path | str | None = None
    if replacement == "symlink_copy":
        target = ctx.dirs.outside / f"copy-{path.parent.name}-{path.name}"
        target.write_bytes(original)
    elif replacement == "symlink_other":
        other = ctx.dirs.older if path.parent == ctx.dirs.newest else ctx.dirs.newest
        target = other / path.name
    elif replacement == "symlink_secret":
        target = secret_file(ctx)
    elif replacement == "symlink_dangling":
        target = ctx.dirs.outside / "does-not-exist"
    elif replacement == "symlink_loop":
        target = path
    elif replacement == "symlink_dev_null":
        target = "/dev/null"
    elif replacement == "symlink_dir":
        target = ctx.dirs.outside
    elif replacement == "symlink_fifo":
        target = fifo(ctx)
    path.unlink(missing_ok=True)
    if target is not None:
        os.symlink(target, path)
    elif replacement == "fifo":
        os.mkfifo(path)
    elif replacement == "directory":
        path.mkdir()
        (path / "inside").write_bytes(original)
    else:
        raise NotApplicable(f"unknown replacement {replacement!r}")


POINTER_CONTENTS = (
    b"\xff\xfe\x00garbage",
    b"step-99999999\n",
    b"../../../etc/passwd\n",
    b"step-00000041\n\nextra lines\n",
    b"step-" + b"9" * 5000 + b"\n",
    b"\x00" * 64,
    b"",
    b"step-00000082\x00\n",
)


@dataclass(frozen=True)
class WritePointer(Mutation):
    """A pointer (``latest``, ``best``) rewritten: garbage, a name that leads nowhere, or
    replaced by a symlink, a FIFO, a directory or a large file (``replacement``)."""

    pointer: str
    content: bytes = b""
    replacement: str = ""

    def touches_newest(self) -> bool:
        return False  # resuming reads no pointer

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.run_dir / self.pointer
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise NotApplicable(f"pointer {self.pointer} was already replaced")
        if self.replacement:
            _replace_path(path, self.replacement, ctx)
            return f"pointer {self.pointer}: replaced by {self.replacement}"
        path.write_bytes(self.content)
        return f"pointer {self.pointer}: content {short(self.content)}"


RUN_CHANGES = (
    "empty_step_dir",  # step-99999999/ holding nothing
    "garbage_step_dir",  # step-99999999/ holding a manifest that is not JSON
    "copy_step_dir",  # step-99999999/ a copy of the newest checkpoint
    "symlink_step_dir",  # step-99999999 -> the newest checkpoint
    "symlink_outside_step_dir",  # the newest checkpoint moved outside, a symlink left
    "fifo_step",  # step-99999999 is a FIFO
    "file_step",  # step-99999999 is a file
    "manifest_in_run_dir",  # a manifest.json at the top of the run
    "step_dir_loop",  # step-99999999 -> the run directory itself
)


@dataclass(frozen=True)
class ChangeRun(Mutation):
    """A change to the run directory itself: extra or moved checkpoint directories."""

    kind: str

    def apply(self, ctx: Context) -> str:
        run, newest = ctx.dirs.run_dir, ctx.dirs.newest
        bogus = run / "step-99999999"
        if bogus.exists() or bogus.is_symlink() or newest.is_symlink():
            raise NotApplicable("the run directory was already changed")
        if self.kind == "empty_step_dir":
            bogus.mkdir()
        elif self.kind == "garbage_step_dir":
            bogus.mkdir()
            (bogus / MANIFEST).write_bytes(b"\x00not json")
        elif self.kind == "copy_step_dir":
            shutil.copytree(newest, bogus, symlinks=True, ignore=_special_files)
        elif self.kind == "symlink_step_dir":
            os.symlink(newest, bogus)
        elif self.kind == "symlink_outside_step_dir":
            moved = ctx.dirs.outside / newest.name
            shutil.move(newest, moved)
            os.symlink(moved, newest)
        elif self.kind == "fifo_step":
            os.mkfifo(bogus)
        elif self.kind == "file_step":
            bogus.write_text("not a directory\n")
        elif self.kind == "manifest_in_run_dir":
            (run / MANIFEST).write_bytes(read_bytes(newest / MANIFEST))
        elif self.kind == "step_dir_loop":
            os.symlink(run, bogus)
        else:
            raise NotApplicable(f"unknown run change {self.kind!r}")
        return f"run: {self.kind}"


def _special_files(directory: str, names: list[str]) -> list[str]:
    """Entries a copy must skip: FIFOs and the like (copying one would block)."""
    return [
        name
        for name in names
        if not (Path(directory, name).is_symlink() or Path(directory, name).is_file())
        and not Path(directory, name).is_dir()
    ]


# --------------------------------------------------------------------------- benign


@dataclass(frozen=True)
class ReformatDocument(Mutation):
    """The same data written another way (key order, indentation, YAML style, comments):
    a resume must not notice."""

    file: str
    style: int = 0
    where: str = "newest"

    def expect(self) -> str:
        return "benign"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.checkpoint(self.where) / self.file
        doc = _load(path)
        style = self.style % 4
        if path.suffix == ".json":
            reordered = _reversed_keys(doc)
            indent = (None, 1, 4, "\t")[style]
            text = json.dumps(reordered, indent=indent, sort_keys=style == 3)
            path.write_text(text + "\n" * style)
        else:
            import yaml

            if style == 0:
                text = yaml.safe_dump(doc, default_flow_style=True, width=10_000)
            elif style == 1:
                text = yaml.safe_dump(doc, sort_keys=True, indent=4)
            elif style == 2:
                text = yaml.safe_dump(_reversed_keys(doc), explicit_start=True, explicit_end=True)
            else:
                lines = yaml.safe_dump(doc, sort_keys=False).splitlines()
                noted = [f"{line}  # note" if not line.endswith(":") else line for line in lines]
                text = "# a comment\n" + "\n".join(noted) + "\n"
            path.write_text(text)
        return f"{self.where} {self.file}: reformatted (style {style})"


def _reversed_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _reversed_keys(node[k]) for k in reversed(list(node))}
    if isinstance(node, list):
        return [_reversed_keys(v) for v in node]
    return node


@dataclass(frozen=True)
class ExtraFile(Mutation):
    """A file the manifest does not list, dropped into a checkpoint: nothing reads it."""

    name: str
    data: bytes = b"notes\n"
    where: str = "newest"

    def expect(self) -> str:
        return "benign"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.checkpoint(self.where) / self.name
        if path.exists() or path.is_symlink():
            raise NotApplicable(f"{self.name} exists")
        path.write_bytes(self.data)
        return f"{self.where}: unlisted file {self.name}"


@dataclass(frozen=True)
class Nothing(Mutation):
    """No change at all (with the re-hash: the manifest rewritten with the same hashes)."""

    def expect(self) -> str:
        return "benign"

    def apply(self, ctx: Context) -> str:
        return "no change"
