"""What a .tflite file says about itself: its embedded card and its sidecar.

Named metadata buffers inside a .tflite file are where a model carries its own contract.

A .tflite file is a FlatBuffer whose root ``Model`` table has a ``metadata`` vector of
``{name, buffer}`` entries, each naming one of the model's ``buffers`` (TFLite's schema.fbs).
crackkit stores its model card (``edge.contract.ModelCard``, JSON, UTF-8) under ``CONTRACT_KEY``.

Reading needs only the ``flatbuffers`` package (no TensorFlow, no generated schema): the few
fields used are read by their vtable slots below, from a read-only memory map, so a 100 MB model
is not copied into memory. Writing rebuilds the model with the schema's object API shipped in
``ai_edge_litert`` (or TensorFlow), keeping every buffer 16-byte aligned as schema.fbs asks.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
from flatbuffers import number_types

from edge.contract import SIDECAR_SUFFIX, ModelCard
from edge.errors import UserError

CONTRACT_KEY = "crackkit.contract"
FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # schema.fbs: Buffer.data (force_align: 16)

# vtable slots (4 + 2 * field index in schema.fbs)
_MODEL_BUFFERS = 12  # Model.buffers, field 4
_MODEL_METADATA = 16  # Model.metadata, field 6
_METADATA_NAME = 4  # Metadata.name, field 0
_METADATA_BUFFER = 6  # Metadata.buffer, field 1
_BUFFER_DATA = 4  # Buffer.data, field 0
_BUFFER_OFFSET = 6  # Buffer.offset, field 1 (data stored after the flatbuffer, models > 2 GB)
_BUFFER_SIZE = 8  # Buffer.size, field 2


def _root(buf) -> flatbuffers.table.Table:
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise ValueError("no TFL3 file identifier")
    position = flatbuffers.encode.Get(number_types.UOffsetTFlags.packer_type, buf, 0)
    return flatbuffers.table.Table(buf, position)


def _vector_tables(table: flatbuffers.table.Table, slot: int) -> list[flatbuffers.table.Table]:
    offset = table.Offset(slot)
    if not offset:
        return []
    start, count = table.Vector(offset), table.VectorLen(offset)
    return [flatbuffers.table.Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(count)]


def _buffer_bytes(buf, buffer: flatbuffers.table.Table) -> bytes:
    offset = buffer.Offset(_BUFFER_DATA)
    if offset:
        start = buffer.Vector(offset)
        return bytes(buf[start:start + buffer.VectorLen(offset)])
    where = buffer.Offset(_BUFFER_OFFSET)
    if where:  # stored outside the flatbuffer, at an absolute file offset
        first = buffer.Get(number_types.Uint64Flags, buffer.Pos + where)
        size = buffer.Get(number_types.Uint64Flags, buffer.Pos + buffer.Offset(_BUFFER_SIZE))
        if first + size > len(buf):
            raise ValueError("a buffer lies past the end of the file")
        return bytes(buf[first:first + size])
    return b""


def metadata_entries(buf) -> dict[str, bytes]:
    """Every named metadata buffer of a .tflite flatbuffer (bytes, bytearray or mmap)."""
    model = _root(buf)
    buffers = _vector_tables(model, _MODEL_BUFFERS)
    entries: dict[str, bytes] = {}
    for entry in _vector_tables(model, _MODEL_METADATA):
        name_offset = entry.Offset(_METADATA_NAME)
        name = entry.String(entry.Pos + name_offset).decode("utf-8", "replace") if name_offset else ""
        slot = entry.Offset(_METADATA_BUFFER)
        index = entry.Get(number_types.Uint32Flags, entry.Pos + slot) if slot else 0
        if index >= len(buffers):
            raise ValueError(f"metadata {name!r} names buffer {index} of {len(buffers)}")
        entries[name] = _buffer_bytes(buf, buffers[index])
    return entries


def read_metadata(path: str | Path) -> dict[str, bytes]:
    """The named metadata buffers of the .tflite file at ``path``; UserError if it is no model."""
    path = Path(path)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return metadata_entries(view)
    except (ValueError, IndexError, OverflowError, UnicodeDecodeError, struct.error) as exc:
        raise UserError(f"{path} is not a TFLite model ({exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_embedded_card_json(path: str | Path):
    """The parsed JSON under CONTRACT_KEY, or None when the model has none."""
    payload = read_metadata(path).get(CONTRACT_KEY)
    if payload is None:
        return None
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"the contract embedded in {Path(path).name} is not UTF-8 JSON: {exc}") from None


# --- writing ----------------------------------------------------------------------------------------

def _schema():
    from ai_edge_litert import schema_py_generated as schema  # a base dependency: no TensorFlow

    return schema


def rebuild_model(content: bytes, edit) -> bytes:
    """A copy of the .tflite ``content`` after ``edit(schema, model)`` changed its object tree
    (the schema's object API), packed with every buffer 16-byte aligned. Buffers stored after the
    flatbuffer (Buffer.offset and size, as litert-quantizer writes them) are brought inside it."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    for buffer in model.buffers or []:
        if buffer.offset and buffer.offset > 1:
            buffer.data = bytearray(content[buffer.offset:buffer.offset + buffer.size])
            buffer.offset = 0
            buffer.size = 0
    edit(schema, model)
    _align_buffers(schema, model)
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(content: bytes, entries: dict[str, bytes]) -> bytes:
    """A copy of the .tflite ``content`` with each named metadata buffer set (replaced when it
    exists). The model's graph and weights are unchanged."""

    def edit(schema, model) -> None:
        model.metadata = [m for m in (model.metadata or [])
                          if (m.name.decode() if isinstance(m.name, bytes) else m.name) not in entries]
        model.buffers = model.buffers or []
        for name, payload in entries.items():
            buffer = schema.BufferT()
            buffer.data = bytearray(payload)
            model.buffers.append(buffer)
            entry = schema.MetadataT()
            entry.name = name
            entry.buffer = len(model.buffers) - 1
            model.metadata.append(entry)

    return rebuild_model(content, edit)


def embed_card(content: bytes, card: ModelCard) -> bytes:
    """A copy of the .tflite ``content`` carrying ``card`` (without its sha256) under CONTRACT_KEY."""
    payload = json.dumps(card.embedded().to_dict(), sort_keys=True).encode("utf-8")
    return with_metadata(content, {CONTRACT_KEY: payload})


def _align_buffers(schema, model) -> None:
    """Make every buffer pack its data 16-byte aligned (the generated Python code ignores the
    schema's force_align)."""

    class AlignedBuffer(schema.BufferT):
        def Pack(self, builder):  # noqa: N802 - the generated API's name
            data = None
            if self.data is not None and len(self.data):
                payload = bytes(memoryview(self.data).cast("B")) if not isinstance(self.data, list) \
                    else bytes(self.data)
                builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    for buffer in model.buffers:
        buffer.__class__ = AlignedBuffer


# --- the model card: embedded, in the sidecar, or both ---------------------------------------------

def sidecar_path(model_path: str | Path) -> Path:
    """model_int8.tflite -> model_int8.json (written by `crack convert`)."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(model_path: str | Path) -> ModelCard | None:
    """The validated sidecar card, or None if there is none. UserError when it is unusable or
    its sha256 is not the model's."""
    path = sidecar_path(model_path)
    if not path.exists():
        return None
    card = ModelCard.load(path)
    if card.sha256 is None:
        raise UserError(f"sidecar {path.name}: field 'sha256' is missing")
    if card.sha256 != file_sha256(model_path):
        raise UserError(
            f"{Path(model_path).name} does not match its sidecar {path.name} (sha256 differs): "
            "the model was replaced or corrupted; copy both files again"
        )
    return card


def read_embedded_card(model_path: str | Path) -> ModelCard | None:
    """The validated card embedded in the .tflite, or None when it carries none."""
    data = read_embedded_card_json(model_path)
    if data is None:
        return None
    return ModelCard.from_dict(data, where=f"contract embedded in {Path(model_path).name}")


@dataclass(frozen=True)
class FoundCard:
    card: ModelCard | None
    embedded: bool  # found inside the .tflite
    sidecar: bool  # found in the sidecar JSON (and its sha256 matched)

    @property
    def source(self) -> str:
        return {(True, True): "embedded and sidecar (they agree)", (True, False): "embedded",
                (False, True): "sidecar", (False, False): "none"}[(self.embedded, self.sidecar)]


def read_model_card(model_path: str | Path) -> FoundCard:
    """The model's card from inside the .tflite and/or its sidecar; UserError when both exist and
    disagree (a sidecar edited by hand, or copied from another conversion)."""
    embedded = read_embedded_card(model_path)
    sidecar = read_sidecar(model_path)
    if embedded is not None and sidecar is not None:
        differing = sidecar.differences(embedded)
        if differing:
            raise UserError(
                f"{Path(model_path).name}: its sidecar {sidecar_path(model_path).name} disagrees with "
                f"the contract embedded in the model ({', '.join(differing)}); copy both files of one "
                "conversion again, or remove the sidecar to use the embedded contract")
    return FoundCard(card=sidecar or embedded, embedded=embedded is not None, sidecar=sidecar is not None)
