"""Plain values for artifact records: the shape `Artifact.get`/`list` return to a job and the CLI
prints (`info_to_plain`), shared by the workers' bridge and the coordinator's CLI."""

from __future__ import annotations

from scriptpool.v1 import artifacts_pb2
from scriptpool.values import PlainValue, from_value_map

TEXT_TYPES = ("text", "code")
"""Artifact types whose content is given back as a string when it is valid UTF-8, for versions that
do not say how their content was given (content_encoding "": older data, clients that do not say)."""


def info_to_plain(info: artifacts_pb2.ArtifactInfo, content: bytes | None = None) -> dict[str, PlainValue]:
    plain: dict[str, PlainValue] = {
        "id": info.id,
        "session_id": info.session_id,
        "type": info.type,
        "metadata": {"name": info.metadata.name, "description": info.metadata.description,
                     "tags": list(info.metadata.tags), "custom": from_value_map(info.metadata.custom)},
        "content_hash": info.content_hash,
        "size": info.size,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "version": info.version,
    }  # fmt: skip
    if content is not None:
        plain["content"] = content_value(info, content)
    return plain


def content_value(info: artifacts_pb2.ArtifactInfo, content: bytes) -> PlainValue:
    """Content as the script gave it: text stored as text is a string, whatever the artifact's type;
    bytes are bytes. Versions that do not say (content_encoding "") keep the type rule."""
    encoding = info.content_encoding
    if encoding == "binary":
        return content
    if encoding == "utf-8" or info.type in TEXT_TYPES:
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return content


__all__ = ["TEXT_TYPES", "content_value", "info_to_plain"]
