"""Mutations of the JSON and YAML files of a checkpoint: structure, types, values, raw bytes.

- :class:`EditDocument`: set, retype, delete or add one value (``pick``);
  values come from the strategies, or are :class:`Raw` payloads spliced in as
  text (YAML tags, anchors, interpolations, ``_target_`` mappings, numbers
  and nestings no serialiser writes);
- :class:`ReplaceDocument`: the whole file another document;
- :class:`LieInManifest`: a file entry of the manifest that says something untrue;
- :class:`RawText`: the bytes (truncated, garbage, not UTF-8, huge, deeply
  nested, duplicate keys; YAML bombs, documents, tag directives);
- :class:`ReformatDocument`: the same data written another way (benign).

See ``devtools.fuzz.mutations`` for the protocol. No TensorFlow here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoints.layout import (
    CONFIG_FILE,
    MANIFEST,
)
from devtools.fuzz.mutations import (
    LARGE_BYTES,
    Context,
    Mutation,
    NotApplicable,
    editable,
    read_bytes,
    short,
)

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


class _DocumentMutation(Mutation):
    """What the mutations of one JSON or YAML file (``file``, ``value``) share."""

    @property
    def phase(self) -> str:  # type: ignore[override]
        return "manifest" if self.file == MANIFEST else "file"

    def expect(self) -> str:
        if self.file == CONFIG_FILE and isinstance(self.value, Raw) and self.value.executes:
            return "refuse"  # a python tag fails safe YAML; a _target_ is refused wherever it is
        return "either"


@dataclass(frozen=True)
class EditDocument(_DocumentMutation):
    """A structural edit of a JSON or YAML file: set, retype, delete or add a value.
    ``pick`` chooses the node among the document's paths (modulo their number), or
    names it (``"loop.best"``; ``""`` is the document itself, for ``add``)."""

    file: str
    op: str  # set | retype | delete | add
    pick: int | str = 0
    value: Any = None  # for set/add/replace: a value, or a Raw payload; for retype: a RETYPES kind
    key: Any = "extra"
    where: str = "newest"

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
    editable(path)
    writer = _Document(ctx)
    plain = writer.plain(doc)
    if path.suffix == ".json":
        text = writer.splice(json.dumps(plain, indent=2, allow_nan=True), '"')
    else:
        import yaml

        text = writer.splice(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True), "")
    path.write_text(text, errors="surrogatepass")


@dataclass(frozen=True)
class ReplaceDocument(_DocumentMutation):
    """The whole file replaced by another document (any JSON/YAML value, or a payload)."""

    file: str
    value: Any
    where: str = "newest"

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
