"""HDF5 mutations of a checkpoint's ``model.weights.h5`` and ``optimizer.h5``, made with h5py.

- :class:`EditH5`: one dataset (``pick``) replaced or changed: external storage,
  external links, virtual datasets (all three must be refused: they read data
  from outside the checkpoint), soft and hard links, a group instead of the
  dataset, another dtype or shape, a huge declared shape, deleted, added or
  renamed datasets, odd attributes, a link cycle;
- :class:`RawH5`: the file's bytes (truncated, overwritten, emptied, replaced
  by text, padded before or after);
- :class:`Repack`: the same arrays in a file written another way (compression,
  chunks, checksums, the newest file format): a resume must not notice.

See ``devtools.fuzz.mutations`` for the protocol. No TensorFlow here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devtools.fuzz.mutations import Context, Mutation, NotApplicable, read_bytes

H5_OPS = (
    "external_storage",
    "external_storage_fifo",
    "external_link",
    "external_link_inside",
    "external_link_dangling",
    "virtual",
    "virtual_missing_source",
    "soft_link",
    "soft_link_dangling",
    "soft_link_loop",
    "hard_link",
    "group",
    "dtype",
    "shape",
    "huge_declared",
    "delete",
    "add",
    "rename",
    "attribute",
    "delete_attribute",
    "cycle",
)
# Each reads array data from outside the checkpoint (DESIGN.md, contract 9: refused).
OUTSIDE_DATA_OPS = frozenset(op for op in H5_OPS if op.startswith(("external", "virtual")))

DTYPES = ("<f8", "<f2", ">f4", "<i4", "<i8", "|u1", "|b1", "S12", "<c8", "vlen_str", "compound")
SHAPES = ("flat", "leading_axis", "transposed", "empty", "scalar", "doubled")
NEW_NAMES = ("99", "-1", "x", "00", "next", " 1")
ATTRIBUTE_VALUES: tuple[Any, ...] = (
    b"\xff\xfe",
    7,
    np.arange(3),
    "",
    "${oc.env:FUZZ_CANARY_SECRET}",
    "x" * 10_000,
    np.float64("nan"),
)
HUGE_ELEMENTS = 1 << 24  # 64 MiB of float32 when read: declared, never written


def _datasets(handle: Any) -> list[str]:
    import h5py

    names: list[str] = []

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            names.append(name)

    handle.visititems(visit)
    return sorted(names)


@dataclass(frozen=True)
class EditH5(Mutation):
    """One dataset of an HDF5 file changed as ``op`` says (``variant`` picks among options)."""

    file: str
    op: str
    pick: int = 0
    variant: int = 0
    where: str = "newest"

    def expect(self) -> str:
        return "refuse" if self.op in OUTSIDE_DATA_OPS else "either"

    def apply(self, ctx: Context) -> str:
        import h5py

        path = ctx.dirs.checkpoint(self.where) / self.file
        read_bytes(path)  # NotApplicable unless a regular file (h5py would block on a FIFO)
        try:
            with h5py.File(path, "r+") as handle:
                names = _datasets(handle)
                if not names:
                    raise NotApplicable(f"{self.file} has no datasets")
                name = names[self.pick % len(names)]
                other = names[(self.pick + 1 + self.variant) % len(names)]
                detail = self._edit(handle, name, other, ctx, path)
        except (OSError, ValueError, TypeError, KeyError) as error:  # h5py cannot make it here
            raise NotApplicable(f"{self.op}: {error}") from None
        return f"{self.where} {self.file}: {self.op} of {name}{detail}"

    def _edit(  # noqa: C901 (one branch per HDF5 edit, in the order of H5_OPS)
        self, handle: Any, name: str, other: str, ctx: Context, path: Path
    ) -> str:
        import h5py

        op, variant = self.op, self.variant
        dataset = handle[name]
        data, attrs, parent = dataset[()], dict(dataset.attrs), dataset.parent.name
        stem = f"{path.parent.name}-{path.stem}-{name.replace('/', '_')}"
        if op in ("attribute", "delete_attribute"):
            owner = dataset if variant % 2 == 0 else dataset.parent
            key = ("path", "name", "extra")[variant % 3]
            if op == "delete_attribute":
                if key not in owner.attrs:
                    raise NotApplicable(f"no attribute {key!r}")
                del owner.attrs[key]
                return f" (attribute {key!r} deleted from {owner.name})"
            value = ATTRIBUTE_VALUES[variant % len(ATTRIBUTE_VALUES)]
            owner.attrs[key] = value
            return f" (attribute {key!r} of {owner.name} = {str(value)[:30]!r})"
        if op == "add":
            new = f"{parent}/{NEW_NAMES[variant % len(NEW_NAMES)]}".lstrip("/")
            if new in handle:
                raise NotApplicable(f"{new} exists")
            handle.create_dataset(new, data=np.zeros_like(data))
            return f" (added {new})"
        if op == "cycle":
            handle[f"{parent}/loop"] = handle["/"]
            return " (hard link to / beside it)"
        del handle[name]
        detail = ""
        if op == "delete":
            return ""
        if op == "rename":
            new_name = NEW_NAMES[variant % len(NEW_NAMES)]
            handle.create_dataset(f"{parent}/{new_name}", data=data)
            return f" (renamed {new_name!r})"
        if op == "group":
            group = handle.create_group(name)
            if variant % 2:
                group.create_dataset("0", data=data)
            return ""
        if op.startswith("external_storage"):
            if data.size == 0 or data.ndim == 0:
                raise NotApplicable("external storage needs a non-empty array")
            raw = ctx.dirs.outside / f"{stem}.raw"
            raw.write_bytes(np.ascontiguousarray(data).tobytes())
            created = handle.create_dataset(
                name, shape=data.shape, dtype=data.dtype, external=[(str(raw), 0, data.nbytes)]
            )
            if op == "external_storage_fifo":  # swapped in after h5py wrote through the file
                raw.unlink()
                os.mkfifo(raw)
                detail = " (a FIFO)"
        elif op.startswith("external_link"):
            folder = path.parent if op == "external_link_inside" else ctx.dirs.outside
            target = folder / f"linked-{stem}.h5"
            if op != "external_link_dangling":
                with h5py.File(target, "w") as linked:
                    linked.create_dataset("data", data=data)
            handle[name] = h5py.ExternalLink(str(target), "/data")
            return f" (-> {target.name})"
        elif op.startswith("virtual"):
            if data.ndim == 0:
                raise NotApplicable("a virtual dataset needs an array")
            source = ctx.dirs.outside / f"vds-{stem}.h5"
            with h5py.File(source, "w") as linked:
                linked.create_dataset("data", data=data)
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(source), "data", shape=data.shape)
            created = handle.create_virtual_dataset(name, layout, fillvalue=0)
            if op == "virtual_missing_source":
                source.unlink()
        elif op.startswith("soft_link"):
            target = {"soft_link": other, "soft_link_loop": name}.get(op, "nowhere")
            handle[name] = h5py.SoftLink("/" + target)
            return f" (-> /{target})"
        elif op == "hard_link":
            handle[name] = handle[other]
            return f" (-> {other})"
        elif op == "dtype":
            dtype = DTYPES[variant % len(DTYPES)]
            created = handle.create_dataset(name, data=_as_dtype(data, dtype))
            detail = f" ({dtype})"
        elif op == "shape":
            shape = SHAPES[variant % len(SHAPES)]
            created = handle.create_dataset(name, data=_reshaped(data, shape))
            detail = f" ({shape}: {created.shape})"
        elif op == "huge_declared":
            created = handle.create_dataset(
                name, shape=(HUGE_ELEMENTS,), dtype="<f4", chunks=(1 << 16,)
            )
        else:
            raise NotApplicable(f"unknown op {op!r}")
        for key, value in attrs.items():
            created.attrs[key] = value
        return detail


def _as_dtype(data: np.ndarray, dtype: str) -> np.ndarray:
    import h5py

    values = np.asarray(data)
    if dtype == "vlen_str":
        return np.array([str(v) for v in values.ravel()], dtype=h5py.string_dtype()).reshape(
            values.shape
        )
    if dtype == "S12":
        return np.array([repr(v).encode()[:12] for v in values.ravel()], dtype="S12").reshape(
            values.shape
        )
    if dtype == "compound":
        out = np.zeros(values.shape, dtype=[("a", "<f4"), ("b", "<i4")])
        out["a"] = values
        return out
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def _reshaped(data: np.ndarray, shape: str) -> np.ndarray:
    values = np.asarray(data)
    if shape == "flat":
        return values.reshape(-1)
    if shape == "leading_axis":
        return values[None]
    if shape == "transposed":
        return values.T if values.ndim >= 2 else values.reshape(-1, 1)
    if shape == "empty":
        return np.zeros((0, *values.shape[1:]), dtype=values.dtype)
    if shape == "scalar":
        return values.reshape(-1)[:1].reshape(()) if values.size else np.float32(0)
    return np.concatenate([values.reshape(-1), values.reshape(-1)])


RAW_H5_KINDS = ("truncate", "garbage", "zero", "text", "append", "prepend")


@dataclass(frozen=True)
class RawH5(Mutation):
    """The bytes of an HDF5 file changed without h5py (``amount``: per mille or offset)."""

    file: str
    kind: str
    amount: int = 0
    data: bytes = b"\xff"
    where: str = "newest"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.checkpoint(self.where) / self.file
        original = read_bytes(path)
        if not original:
            raise NotApplicable(f"{self.file} is empty")
        kind = self.kind
        if kind == "truncate":
            changed = original[: len(original) * (self.amount % 1000) // 1000]
        elif kind == "garbage":
            at = self.amount % len(original)
            changed = original[:at] + self.data + original[at + len(self.data) :]
        elif kind == "zero":
            changed = b""
        elif kind == "text":
            changed = b'{"not": "hdf5"}\n'
        elif kind == "append":
            changed = original + (self.data or b"\x00") * 512
        elif kind == "prepend":
            changed = b"\x00" * 512 + original
        else:
            raise NotApplicable(f"unknown raw kind {kind!r}")
        path.write_bytes(changed)
        return f"{self.where} {self.file}: raw {kind} ({self.amount})"


UNFILTERED_STYLE = 2  # the one repack style below that writes plain, unfiltered datasets
FILTERED_STYLES = (0, 1, 3)  # gzip; shuffle and fletcher32 checksums; lzf


@dataclass(frozen=True)
class Repack(Mutation):
    """The same groups, datasets and attributes written into a new file in another way."""

    file: str
    style: int = 0
    where: str = "newest"

    def expect(self) -> str:
        # Filters (compression, shuffle, checksums) are refused by the reader: a compressed
        # dataset's size is not bounded by the file's (checkpoints.io.h5).
        return "benign" if self.style % 4 == UNFILTERED_STYLE else "refuse"

    def apply(self, ctx: Context) -> str:
        import h5py

        path = ctx.dirs.checkpoint(self.where) / self.file
        read_bytes(path)  # NotApplicable unless a regular file
        style = self.style % 4
        options = [
            {"compression": "gzip", "compression_opts": 9},
            {"chunks": True, "shuffle": True, "fletcher32": True},
            {},
            {"compression": "lzf"},
        ][style]
        repacked = path.with_name(f".{path.name}.repacked")
        with (
            h5py.File(path, "r") as source,
            h5py.File(
                repacked, "w", libver="latest" if style == 2 else "earliest", track_order=style == 2
            ) as target,
        ):
            _copy_attrs(source, target)

            def copy(name: str, item: Any) -> None:
                if isinstance(item, h5py.Group):
                    _copy_attrs(item, target.require_group(name))
                else:
                    kwargs = options if item.ndim and item.size else {}
                    _copy_attrs(item, target.create_dataset(name, data=item[()], **kwargs))

            source.visititems(copy)
        repacked.replace(path)
        return f"{self.where} {self.file}: repacked (style {style})"


def _copy_attrs(source: Any, target: Any) -> None:
    for key, value in source.attrs.items():
        target.attrs[key] = value
