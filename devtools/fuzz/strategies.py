"""Hypothesis strategies: the cases of the fuzzer, one strategy per kind of file.

``cases(kind)`` draws a :class:`~devtools.fuzz.session.Case`: one to three
mutations of that kind, whether the attacker re-hashes the manifest (nine
times in ten), and whether the resume names the checkpoint or its run. Kinds:

==============  ================================================================
``manifest``    manifest.json: structure, types, values, sizes and hashes, raw
``state``       trainer_state.json: the same
``config``      config.yaml: the same, plus YAML tags, anchors, interpolations
``h5``          model.weights.h5 and optimizer.h5 (``devtools.fuzz.h5``)
``filesystem``  symlinks, FIFOs, directories, large files; the run directory
``pointer``     the ``latest`` and ``best`` pointers
``benign``      changes a resume must not notice (reformatting, repacking, ...)
==============  ================================================================

``cases()`` draws from every kind. No TensorFlow here.
"""

from __future__ import annotations

from hypothesis import strategies as st

from checkpoints.layout import (
    CONFIG_FILE,
    H5_FILES,
    MANIFEST,
    POINTERS,
    STATE_FILE,
    STATE_FILES,
)
from checkpoints.reading import FORBIDDEN_KEYS
from devtools.fuzz.documents import (
    JSON_PAYLOADS,
    RETYPES,
    YAML_PAYLOADS,
    EditDocument,
    LieInManifest,
    RawText,
    ReformatDocument,
    ReplaceDocument,
)
from devtools.fuzz.files import (
    CHECKPOINT_FILES,
    POINTER_CONTENTS,
    REPLACEMENTS,
    RUN_CHANGES,
    ChangeRun,
    ExtraFile,
    Nothing,
    ReplaceFile,
    WritePointer,
)
from devtools.fuzz.h5 import (
    FILTERED_STYLES,
    H5_OPS,
    RAW_H5_KINDS,
    UNFILTERED_STYLE,
    EditH5,
    RawH5,
    Repack,
)
from devtools.fuzz.session import Case

KINDS = ("manifest", "state", "config", "h5", "filesystem", "pointer", "benign")

BOUNDARY_NUMBERS = (
    0,
    -1,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    10**400,
    1e308,
    5e-324,
    -0.0,
    0.5,
)
TRICKY_STRINGS = (
    "",
    "${oc.env:FUZZ_CANARY_SECRET}",
    "${fuzz_canary:json}",
    "../../../etc/passwd",
    "/etc/passwd",
    "step-99999999",
    "manifest.json",
    "config.yaml",
    "\x00",
    "\n",
    "NaN",
    "1e400",
    "x" * 300,
)
KNOWN_KEYS = (
    "files",
    "size",
    "sha256",
    "global_step",
    "format_version",
    "loop",
    "rng",
    "state",
    "path",
    "name",
    "epoch",
    "history",
    "model",
    "schedule",
    "resolved_schedule",
    *FORBIDDEN_KEYS,
)

RETYPE = st.sampled_from(RETYPES)
WHERE = st.sampled_from(("newest", "newest", "newest", "older"))
PICK = st.integers(0, 10**6)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BOUNDARY_NUMBERS),
    st.floats(),
    TEXT,
    st.sampled_from(TRICKY_STRINGS),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(TEXT | st.sampled_from(KNOWN_KEYS), inner, max_size=4)
    ),
    max_leaves=8,
)
yaml_values = st.one_of(json_values, st.sampled_from(YAML_PAYLOADS))
json_with_payloads = st.one_of(json_values, st.sampled_from(JSON_PAYLOADS))

JSON_RAW = (
    "truncate",
    "garbage",
    "empty",
    "non_utf8",
    "nul",
    "bom",
    "huge",
    "deep",
    "duplicate_key",
)
YAML_RAW = (
    *JSON_RAW,
    "billion_laughs",
    "multi_document",
    "tag_directive",
    "python_document",
    "recursive_anchor",
    "tabs",
)


def document_mutations(file: str, values: st.SearchStrategy, raw_kinds: tuple[str, ...]):
    """Structural edits, whole-document replacements, raw-byte changes and file swaps."""
    key = TEXT | st.sampled_from(KNOWN_KEYS)
    return st.one_of(
        st.builds(EditDocument, st.just(file), st.just("set"), PICK, values, where=WHERE),
        st.builds(EditDocument, st.just(file), st.just("retype"), PICK, RETYPE, where=WHERE),
        st.builds(EditDocument, st.just(file), st.just("delete"), PICK, where=WHERE),
        st.builds(EditDocument, st.just(file), st.just("add"), PICK, values, key, where=WHERE),
        st.builds(ReplaceDocument, st.just(file), values, where=WHERE),
        st.builds(
            RawText,
            st.just(file),
            st.sampled_from(raw_kinds),
            st.integers(0, 100_000),
            st.binary(min_size=1, max_size=16),
            where=WHERE,
        ),
        st.builds(ReplaceFile, st.just(file), st.sampled_from(REPLACEMENTS), where=WHERE),
    )


LISTED_NAMES = (*STATE_FILES, "../config.yaml", "a/b", ".", "..", "", "manifest.json", "x" * 300)


def manifest_lies():
    lie = st.one_of(st.sampled_from(BOUNDARY_NUMBERS), json_scalars)
    return st.builds(
        LieInManifest,
        st.sampled_from(LISTED_NAMES) | TEXT,
        lie,
        st.sampled_from(("0" * 64, "")) | json_scalars,
        st.sampled_from(("", "size", "sha256")),
    )


def h5_mutations():
    files = st.sampled_from(H5_FILES)
    return st.one_of(
        st.builds(EditH5, files, st.sampled_from(H5_OPS), PICK, st.integers(0, 1000), where=WHERE),
        st.builds(
            RawH5,
            files,
            st.sampled_from(RAW_H5_KINDS),
            st.integers(0, 100_000),
            st.binary(min_size=1, max_size=64),
            where=WHERE,
        ),
        # The same arrays, compressed or filtered: refused (reads stay bounded by the file).
        st.builds(Repack, files, st.sampled_from(FILTERED_STYLES), where=WHERE),
    )


def filesystem_mutations():
    return st.one_of(
        st.builds(
            ReplaceFile,
            st.sampled_from(CHECKPOINT_FILES),
            st.sampled_from(REPLACEMENTS),
            where=WHERE,
        ),
        st.builds(ChangeRun, st.sampled_from(RUN_CHANGES)),
    )


def pointer_mutations():
    pointers = st.sampled_from(POINTERS)
    return st.one_of(
        st.builds(WritePointer, pointers, st.sampled_from(POINTER_CONTENTS) | st.binary()),
        st.builds(WritePointer, pointers, replacement=st.sampled_from(REPLACEMENTS)),
    )


def benign_mutations():
    return st.one_of(
        st.builds(
            ReformatDocument,
            st.sampled_from((MANIFEST, STATE_FILE, CONFIG_FILE)),
            st.integers(0, 3),
            where=WHERE,
        ),
        st.builds(Repack, st.sampled_from(H5_FILES), st.just(UNFILTERED_STYLE), where=WHERE),
        st.builds(
            ExtraFile,
            st.sampled_from(("notes.txt", ".hidden", "model.weights.h5.bak", "config.yml")),
            where=WHERE,
        ),
        st.just(Nothing()),
    )


MUTATIONS = {
    "manifest": lambda: (
        document_mutations(MANIFEST, json_with_payloads, JSON_RAW) | manifest_lies()
    ),
    "state": lambda: document_mutations(STATE_FILE, json_with_payloads, JSON_RAW),
    "config": lambda: document_mutations(CONFIG_FILE, yaml_values, YAML_RAW),
    "h5": h5_mutations,
    "filesystem": filesystem_mutations,
    "pointer": pointer_mutations,
    "benign": benign_mutations,
}


def cases(kind: str | None = None) -> st.SearchStrategy[Case]:
    """Cases of one kind (see the module docstring), or of every kind when ``kind`` is None."""
    if kind is None:
        return st.one_of([cases(k) for k in KINDS])
    rehash = st.just(True) if kind == "benign" else st.sampled_from((True,) * 9 + (False,))
    return st.builds(
        Case,
        kind=st.just(kind),
        mutations=st.lists(MUTATIONS[kind](), min_size=1, max_size=3).map(tuple),
        rehash=rehash,
        resume_via=st.sampled_from(("checkpoint", "run")),
    )
