"""Plain values for artifact records: the shape `Artifact.get`/`list`/`query` return to a job and the
CLI prints (`info_to_plain`), shared by the workers' bridge and the coordinator's CLI.

Beside scriptpool's own fields (`id`, `session_id`, `type`, `metadata = {name, description, tags,
custom}`, `content_hash`, `size`, `version`) a record carries rs-llmspell's (issue 16):
`artifact_type` (= `type`), and at top level `name`, `description`, `tags`, `custom` and `mime_type`;
`metadata` also holds `artifact_type`, `mime_type`, `size`, `version` and the times. Times are
ISO-8601 strings with the seconds under `<name>_unix` (ADR 0011). `mime_type` is the `mime_type`
string the script stored in the metadata, else the one the artifact type names (`MIME_TYPES`, or a
type that is itself a MIME type such as `image/png`), else None."""

from __future__ import annotations

from scriptpool.core.script_times import with_times
from scriptpool.v1 import artifacts_pb2
from scriptpool.values import PlainValue, from_value_map

TEXT_TYPES = ("text", "code")
"""Artifact types whose content is given back as a string when it is valid UTF-8, for versions that
do not say how their content was given (content_encoding "": older data, clients that do not say)."""

MIME_TYPES = {
    "text": "text/plain",
    "code": "text/plain",
    "markdown": "text/markdown",
    "csv": "text/csv",
    "html": "text/html",
    "json": "application/json",
    "xml": "application/xml",
    "yaml": "application/yaml",
    "binary": "application/octet-stream",
}
"""The MIME type an artifact type implies when the script gave none."""


def mime_type_of(kind: str, custom: dict[str, PlainValue]) -> str | None:
    given = custom.get("mime_type")
    if isinstance(given, str) and given:
        return given
    if kind in MIME_TYPES:
        return MIME_TYPES[kind]
    major, slash, minor = kind.partition("/")
    if slash and major and minor and " " not in kind:
        return kind
    return None


def info_to_plain(info: artifacts_pb2.ArtifactInfo, content: bytes | None = None) -> dict[str, PlainValue]:
    custom = from_value_map(info.metadata.custom)
    mime_type = mime_type_of(info.type, custom)
    times = {"created_at": info.created_at, "updated_at": info.updated_at}
    metadata = with_times(
        {"name": info.metadata.name, "description": info.metadata.description, "tags": list(info.metadata.tags),
         "custom": custom, "artifact_type": info.type, "mime_type": mime_type, "size": info.size,
         "version": info.version},
        **times,
    )  # fmt: skip
    plain: dict[str, PlainValue] = {
        "id": info.id,
        "session_id": info.session_id,
        "type": info.type,
        "artifact_type": info.type,
        "name": info.metadata.name,
        "description": info.metadata.description,
        "tags": list(info.metadata.tags),
        "custom": from_value_map(info.metadata.custom),
        "mime_type": mime_type,
        "metadata": metadata,
        "content_hash": info.content_hash,
        "size": info.size,
        "version": info.version,
    }
    with_times(plain, **times)
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


__all__ = ["MIME_TYPES", "TEXT_TYPES", "content_value", "info_to_plain", "mime_type_of"]
