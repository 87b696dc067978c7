"""The one reader of what a run directory holds: bounded in size, plain data, typed.

Everything the trainer and its tools read back from a run comes through here
(HDF5 files through :mod:`checkpoints.io.h5`, which uses the same file opener):

1. **Files** are opened by :func:`open_regular`: never through a symlink,
   never a FIFO, device or directory (so nothing hangs or reads without end),
   and read up to a limit (:func:`read_bounded`; pointers: 256 bytes).
   Zip members are read the same way (:func:`read_zip_member`): the size the
   header claims is checked, and the read is capped, since headers can lie.
2. **Parsing** makes plain data only: JSON refuses ``NaN``/``Infinity``;
   YAML goes through :func:`parse_yaml`, which refuses anchors and aliases
   (an alias bomb of a few KB expands to gigabytes), merge keys, and every tag
   but str, int, float, bool, null, list and mapping (``!!binary``, ``!!set``,
   ``!!timestamp``, ``!!python/...``). :func:`check_plain` then requires
   string keys, finite numbers and a bounded depth.
3. **Schemas** (``checkpoints.schemas``: :class:`~checkpoints.schemas.Record`
   and friends) type what is read: a manifest (``checkpoints.manifest.read_manifest``),
   the trainer state (:func:`read_trainer_state`) and a run's summary
   (:func:`read_run_summary`): types, ranges, finite numbers.
4. **A checkpoint's config** (:func:`read_plain_config`) is data: no Hydra
   instantiation key, no OmegaConf interpolation (``${...}``) or missing
   value (``???``) anywhere (``trainer.config.saved`` then checks its sections).

Whatever fails is a ``ValueError`` (or, where a checkpoint is being used,
a ``UserError``) with one line saying what and where. No TensorFlow here.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from checkpoints.errors import UserError
from checkpoints.layout import CONFIG_FILE, STATE_FILE
from checkpoints.schemas import RUN_SUMMARY, TRAINER_STATE

if TYPE_CHECKING:
    import zipfile

    from checkpoints.manifest import Checkpoint

MAX_CONFIG_BYTES = 1 << 20
MAX_STATE_BYTES = 16 << 20
MAX_POINTER_BYTES = 256  # a pointer holds one checkpoint name
MAX_DEPTH = 100  # nesting of any JSON or YAML document read (a rescued Keras config: ~15)

# Hydra's instantiation keys: a config read from a checkpoint holding any of them
# is refused, since nothing read from a checkpoint is ever instantiated.
FORBIDDEN_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
# OmegaConf syntax: an interpolation (resolved when the config is used: ``${oc.env:..}``
# reads the environment) and the missing-value marker. A checkpoint's config is data.
INTERPOLATION = "${"
MISSING_VALUE = "???"
IS_DATA = "a checkpoint's config is data: it is never interpolated"


# --------------------------------------------------------------------------- files


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for binary reading if it is a regular file; ValueError otherwise.

    Symlinks are not followed (``O_NOFOLLOW``) and the open never blocks
    (``O_NONBLOCK``: a FIFO would wait for a writer), so a link out of the run,
    a FIFO or a device is refused, not read.
    """
    path = Path(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if path.is_symlink():
            raise ValueError(f"{path.name} is a symlink, not a regular file") from None
        raise ValueError(f"{path.name} cannot be read ({error.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(f"{path.name} is not a regular file ({_file_kind(mode)})")
    return os.fdopen(fd, "rb")


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of regular file ``path``; ValueError if it is larger than ``max_bytes``."""
    with open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size > max_bytes:
            raise ValueError(f"{Path(path).name} is larger than {max_bytes} bytes")
        try:
            data = handle.read(max_bytes + 1)  # it may have grown since fstat
        except OSError as error:
            raise ValueError(f"{Path(path).name} cannot be read ({error.strerror})") from None
    if len(data) > max_bytes:
        raise ValueError(f"{Path(path).name} is larger than {max_bytes} bytes")
    return data


def read_zip_member(archive: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    """Member ``name`` of ``archive``, inflated; ValueError if it is larger than ``max_bytes``.

    Both the size the zip header states and the bytes actually inflated are
    bounded: a header can claim a small size for a member that inflates to gigabytes.
    """
    return b"".join(_zip_chunks(archive, name, max_bytes))


def extract_zip_member(archive: zipfile.ZipFile, name: str, target: Path, max_bytes: int) -> None:
    """Member ``name`` of ``archive`` written to the new file ``target``, bounded as
    :func:`read_zip_member` reads (for members too large to hold in memory, like weights)."""
    with open(target, "xb") as out:
        for chunk in _zip_chunks(archive, name, max_bytes):
            out.write(chunk)


def _zip_chunks(archive: zipfile.ZipFile, name: str, max_bytes: int, chunk: int = 1 << 20):
    info = archive.getinfo(name)
    if info.file_size > max_bytes:
        raise ValueError(f"{name} is larger than {max_bytes} bytes")
    total = 0
    try:
        with archive.open(info) as member:
            while block := member.read(min(chunk, max_bytes + 1 - total)):
                total += len(block)
                if total > max_bytes:
                    raise ValueError(f"{name} inflates to more than {max_bytes} bytes")
                yield block
    except ValueError:
        raise
    except Exception as error:  # zipfile.BadZipFile (a bad CRC: a lying header), zlib.error...
        raise ValueError(f"{name} cannot be read from the zip ({_one_line(error)})") from None


def read_pointer_file(path: Path) -> str:
    """The checkpoint name a pointer file holds (stripped); ValueError if it is not a
    small regular file of text. Whether the name is a checkpoint's is the caller's check."""
    data = read_bounded(path, MAX_POINTER_BYTES)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{Path(path).name} is not text") from None


# --------------------------------------------------------------------------- parsing


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (finite numbers only)")


def parse_json(text: str | bytes, what: str) -> Any:
    """``text`` parsed as JSON plain data (:func:`check_plain`); ValueError says why not."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{what} is not valid JSON ({_one_line(error)})") from None
    check_plain(data, what)
    return data


def parse_yaml(text: str | bytes, what: str) -> Any:
    """``text`` parsed as YAML plain data (:func:`check_plain`); ValueError says why not.

    Anchors, aliases, merge keys and any tag but the plain ones are refused
    while the document is composed, before anything is built from it.
    """
    import yaml

    try:
        data = yaml.load(text, Loader=_plain_loader())  # plain data only: see the loader
    except (UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as error:
        raise ValueError(f"{what} is not valid YAML ({_one_line(error)})") from None
    check_plain(data, what)
    return data


# YAML's plain tags: the types a config or a state file is made of.
_YAML = "tag:yaml.org,2002:"
PLAIN_YAML_TAGS = tuple(_YAML + t for t in ("null", "bool", "int", "float", "str", "seq", "map"))


@functools.cache
def _plain_loader() -> type:
    """A ``yaml.SafeLoader`` that builds plain data only (see :func:`parse_yaml`)."""
    import yaml

    class PlainDataLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValueError(
                    f"line {event.start_mark.line + 1}: YAML anchors and aliases are not "
                    "allowed (plain data only)"
                )
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def flatten_mapping(self, node):
            for key, _ in node.value:
                if key.tag in (_YAML + "merge", _YAML + "value"):
                    raise ValueError(
                        f"line {key.start_mark.line + 1}: YAML merge keys are not allowed"
                    )

    def refuse(loader, node) -> Any:
        tag = node.tag.replace(_YAML, "!!")
        raise ValueError(
            f"line {node.start_mark.line + 1}: a {tag} value is not plain data "
            "(only str, int, float, bool, null, lists and mappings)"
        )

    PlainDataLoader.yaml_constructors = {
        **{tag: yaml.SafeLoader.yaml_constructors[tag] for tag in PLAIN_YAML_TAGS},
        None: refuse,  # any other tag, explicit or resolved (a date is a !!timestamp)
    }
    PlainDataLoader.yaml_multi_constructors = {}
    return PlainDataLoader


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines)[:300] or type(error).__name__


def check_plain(data: Any, what: str) -> None:
    """ValueError unless ``data`` is plain data: mappings with string keys, lists,
    strings, integers, finite floats, booleans and None, nested at most MAX_DEPTH deep."""
    stack = [(data, "", 0)]
    while stack:  # iterative: a deep document must not exhaust Python's stack
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{what} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise ValueError(f"{what} has a non-string key {key!r} at {where or 'top'}")
                stack.append((value, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ValueError(f"{what}: {where or 'the value'} is {node} (finite numbers only)")
        elif not (node is None or isinstance(node, str | int)):  # bool is an int
            raise ValueError(f"{what}: {where} is a {type(node).__name__}, not plain data")


def read_data(path: Path, max_bytes: int) -> Any:
    """A small JSON (``.json``) or YAML file of a run, as plain data; ValueError if not."""
    path = Path(path)
    data = read_bounded(path, max_bytes)
    if path.suffix == ".json":
        return parse_json(data, path.name)
    return parse_yaml(data, path.name)


def read_mapping(path: Path, max_bytes: int) -> dict[str, Any]:
    """:func:`read_data` of a file that must hold a mapping (JSON object, YAML mapping)."""
    data = read_data(path, max_bytes)
    if not isinstance(data, dict):
        kind = "JSON object" if Path(path).suffix == ".json" else "YAML mapping"
        raise ValueError(f"{Path(path).name} is not a {kind}")
    return data


def to_json(data: Any, **options: Any) -> str:
    """``data`` as JSON this reader accepts: NaN and infinities (a diverged loss) become null."""
    return json.dumps(_finite(data), allow_nan=False, **options)


def _finite(node: Any) -> Any:
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, Mapping):
        return {key: _finite(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_finite(value) for value in node]
    return node


# --------------------------------------------------------------------------- trainer state


def read_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's ``trainer_state.json``, checked against :data:`TRAINER_STATE`
    and against its manifest (the same loop position); a UserError if it is not sound."""
    try:
        state = read_mapping(checkpoint.file(STATE_FILE), MAX_STATE_BYTES)
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None
    problem = TRAINER_STATE.problem(state, "")
    manifest = checkpoint.manifest or {}
    for key in ("epoch", "batches_done", "epochs_completed"):
        if problem is None and key in manifest and state["loop"][key] != manifest[key]:
            problem = f"loop.{key} is {state['loop'][key]}, the manifest says {manifest[key]}"
    if problem:
        raise UserError(f"checkpoint {checkpoint.path}: {STATE_FILE}: {problem}")
    return state


# --------------------------------------------------------------------------- run summary

MAX_SUMMARY_BYTES = 1 << 20


def read_run_summary(path: Path) -> dict[str, Any] | None:
    """The ``summary.json`` at ``path``, checked against :data:`RUN_SUMMARY`; None when
    it is absent or not sound (the run is then treated as unfinished)."""
    try:
        summary = read_mapping(path, MAX_SUMMARY_BYTES)
    except ValueError:
        return None
    return None if RUN_SUMMARY.problem(summary, "") else summary


# --------------------------------------------------------------------------- config


def config_problem(node: Any) -> str | None:
    """What makes a config read from a checkpoint more than data, or None: a Hydra
    instantiation key, an OmegaConf interpolation or a missing-value marker, with where
    (``contains ...``, to follow the file's name)."""
    stack = [(node, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if INTERPOLATION in node:
                return f"contains an interpolation at {where}: {node[:60]!r} ({IS_DATA})"
            if node == MISSING_VALUE:
                return f"contains the missing-value marker '???' at {where}"
        elif isinstance(node, Mapping):
            for key, value in node.items():
                here = f"{where}.{key}" if where else str(key)
                if key in FORBIDDEN_KEYS:
                    return f"contains {here!r}: checkpoints are never instantiated"
                if isinstance(key, str) and (INTERPOLATION in key or key == MISSING_VALUE):
                    return f"contains an interpolation in the key {here!r} ({IS_DATA})"
                stack.append((value, here))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
    return None


def read_plain_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's config.yaml as plain data: bounded, parsed safely, and refused
    (a UserError) when it holds anything but data (:func:`config_problem`). What the
    sections mean is the writer's business (``trainer.config.saved`` checks its own)."""
    path = checkpoint.file(CONFIG_FILE)
    try:
        raw = read_mapping(path, MAX_CONFIG_BYTES)
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None
    problem = config_problem(raw)
    if problem:
        raise UserError(f"{path} {problem}")
    return raw
