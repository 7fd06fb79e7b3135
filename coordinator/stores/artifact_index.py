"""Artifact records and the indexes that answer list, query and search without a scan.

  sp:artifact:{id}                      hash  id session_id owner name created_at updated_at latest
                                              type tags(JSON) size  (the latest version's fields)
  sp:artifact:{id}:v:{n}                hash  type name description tags(JSON) custom(ValueMap bytes)
                                              sha size created_at [encoding]  (version n, immutable;
                                              encoding "utf-8"/"binary" when the writer said, since
                                              issue 16: absent in older versions)
  sp:artifact:{id}:words                set   the words the latest version put in the word index
  sp:session:{sid}:artifact-names       hash  name -> artifact id
  sp:session:{sid}:artifacts            zset  id -> updated_at
  sp:session:{sid}:artifacts:created    zset  id -> created_at
  sp:session:{sid}:artifacts:size       zset  id -> latest size
  sp:session:{sid}:artifacts:type:{t}   set   ids of type t
  sp:session:{sid}:artifacts:tag:{t}    set   ids tagged t
  sp:session:{sid}:artifacts:word:{w}   set   ids whose name, description or text content has word w

Every filter that has an index narrows the candidates in Redis first: a query counts each index's
candidates (SINTERCARD, SCARD, ZCOUNT), is refused past `max_query_candidates`, and then reads only
the narrowest index's ids; only those candidates are loaded, to apply every filter and sort.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from scriptpool.coordinator.stores.sessions import _epoch as epoch  # one parser for time filters everywhere
from scriptpool.coordinator.stores.validation import check_tags, parse_cursor
from scriptpool.core.job_records import hash_fields, texts
from scriptpool.core.keys import artifact_key, session_index, version_key
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.v1 import artifacts_pb2, common_pb2

DEFAULT_PAGE = 100
MAX_PAGE = 1000
SORT_FIELDS = ("created_at", "updated_at", "name", "size", "type")
TEXT_SAMPLE_BYTES = 1024 * 1024
"""How much of an artifact's content goes into the word index."""
MAX_WORDS = 5000
_WORD = re.compile(r"\w{2,64}")


def words_of(*texts_: str) -> list[str]:
    found: dict[str, None] = {}
    for chunk in texts_:
        for word in _WORD.findall(chunk.lower()):
            found[word] = None
            if len(found) >= MAX_WORDS:
                return list(found)
    return list(found)


def sample_text(sample: bytes, complete: bool) -> str:
    """The sample as text, or "" when the content is not UTF-8 (a cut multi-byte tail is allowed)."""
    try:
        return sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not complete and exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data":
            return sample[: exc.start].decode("utf-8", "ignore")
        return ""


def decode_info(artifact: dict[str, bytes], version: dict[str, bytes], number: int) -> artifacts_pb2.ArtifactInfo:
    return artifacts_pb2.ArtifactInfo(
        id=artifact["id"].decode(),
        session_id=artifact["session_id"].decode(),
        type=version["type"].decode(),
        metadata=artifacts_pb2.ArtifactMetadata(
            name=version["name"].decode(),
            description=version["description"].decode(),
            tags=json.loads(version["tags"]),
            custom=common_pb2.ValueMap.FromString(version["custom"]),
        ),
        content_hash=version["sha"].decode(),
        size=int(version["size"]),
        created_at=float(artifact["created_at"]),
        updated_at=float(version["created_at"]),
        version=number,
        content_encoding=version.get("encoding", b"").decode(),
    )


def load_infos(redis: Redis, ids: Iterable[str]) -> list[tuple[artifacts_pb2.ArtifactInfo, str]]:
    """Latest versions of the artifacts that still exist, in order, each with its owner."""
    ids = list(ids)
    pipe = redis.pipeline(transaction=False)
    for artifact_id in ids:
        pipe.hgetall(artifact_key(artifact_id))
    records = [hash_fields(raw) for raw in pipe.execute()]
    present = [(i, r) for i, r in zip(ids, records, strict=True) if r.get("latest") and r.get("owner")]
    for artifact_id, record in present:
        pipe.hgetall(version_key(artifact_id, int(record["latest"])))
    out = []
    for (_, record), raw in zip(present, pipe.execute(), strict=True):
        version = hash_fields(raw)
        if version:
            out.append((decode_info(record, version, int(record["latest"])), record["owner"].decode()))
    return out


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a query may look: whole sessions (the caller's own), and single granted artifacts."""

    sessions: list[str]
    granted: list[str]
    """Artifact ids granted to the caller in sessions that are not its own."""


def _range(value: common_pb2.Value, what: str) -> float | None:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    return epoch(value, what)


@dataclass(frozen=True, slots=True)
class _Criterion:
    """One indexed filter of a query in one session: how to count its ids and how to read them."""

    kind: str
    """inter (type, tags and words: SINTER), union (tags_any: SUNION), created or size (a zset range)"""
    keys: list[str]
    low: str | float = "-inf"
    high: str | float = "+inf"


class ArtifactIndex:
    def __init__(self, redis: Redis, max_candidates: int = 10_000) -> None:
        self.redis = redis
        self.max_candidates = max_candidates
        """Artifacts one query may load to filter and sort (settings.max_query_candidates)."""

    def page_of_session(
        self, session_id: str, page: common_pb2.PageRequest, grants_key: str | None
    ) -> artifacts_pb2.ArtifactList:
        """A session's artifacts, newest first; `grants_key` (a grantee's index of the session's
        artifacts granted to it) restricts them to those. Either way a ranged read of one page."""
        limit, offset = _page(page)
        key = grants_key or session_index(session_id, ":created")
        ids = texts(self.redis.zrevrange(key, offset, offset + limit))
        more = len(ids) > limit
        ids = ids[:limit]
        answer = artifacts_pb2.ArtifactList(artifacts=[info for info, _ in load_infos(self.redis, ids)])
        if more:
            answer.next_cursor = str(offset + limit)
        return answer

    def query(self, scope: Scope, q: artifacts_pb2.ArtifactQuery, words: list[str]) -> artifacts_pb2.ArtifactList:
        """Counts each session's candidates in its indexes first (no ids read), refuses a query with
        more than `max_candidates` in all, then reads only the narrowest index's ids per session and
        loads those records to apply every filter and sort."""
        limit, offset = _page(q.page)
        sort = q.sort or "-created_at"
        field = sort.lstrip("-+")
        if field not in SORT_FIELDS:
            raise InvalidArgument(f"sort must be one of {', '.join(SORT_FIELDS)} (prefix '-' for descending)")
        tags = check_tags(list(q.tags))
        tags_any = check_tags(list(q.tags_any), "tags_any")
        after = _range(q.created_after, "created_after")
        before = _range(q.created_before, "created_before")
        if q.max_size and q.min_size > q.max_size:
            raise InvalidArgument(f"min_size {q.min_size} is larger than max_size {q.max_size}")
        plans = [
            (session_id, self._criteria(session_id, q.type, tags, tags_any, words, after, before, q))
            for session_id in scope.sessions
        ]
        narrowest = self._narrowest(plans, len(scope.granted))
        pipe = self.redis.pipeline(transaction=False)
        for criterion in narrowest:
            _fetch(pipe, criterion)
        candidates: list[str] = []
        unchecked: list[str] = []  # candidates that did not come through the word sets
        for criterion, reply in zip(narrowest, pipe.execute() if narrowest else [], strict=True):
            ids = sorted(texts(list(reply)))
            (candidates if criterion.kind == "inter" else unchecked).extend(ids)
        seen = set(candidates) | set(unchecked)
        unchecked += [i for i in scope.granted if i not in seen]
        infos = load_infos(self.redis, candidates + _with_words(self.redis, unchecked, words))
        wanted_meta = dict(q.metadata.fields.items())
        matched = [
            info
            for info, _ in infos
            if (not q.type or info.type == q.type)
            and set(tags).issubset(info.metadata.tags)
            and (not tags_any or set(tags_any) & set(info.metadata.tags))
            and (not q.name_pattern or fnmatch.fnmatchcase(info.metadata.name, q.name_pattern))
            and all(info.metadata.custom.fields.get(k) == v for k, v in wanted_meta.items())
            and (after is None or info.created_at > after)
            and (before is None or info.created_at < before)
            and info.size >= q.min_size
            and (not q.max_size or info.size <= q.max_size)
        ]
        key = {"name": lambda i: i.metadata.name, "size": lambda i: i.size, "type": lambda i: i.type,
               "created_at": lambda i: i.created_at, "updated_at": lambda i: i.updated_at}[field]  # fmt: skip
        matched.sort(key=key, reverse=sort.startswith("-"))
        answer = artifacts_pb2.ArtifactList(artifacts=matched[offset : offset + limit])
        if offset + limit < len(matched):
            answer.next_cursor = str(offset + limit)
        return answer

    def _criteria(
        self,
        session_id: str,
        kind: str,
        tags: list[str],
        tags_any: list[str],
        words: list[str],
        after: float | None,
        before: float | None,
        q: artifacts_pb2.ArtifactQuery,
    ) -> list[_Criterion]:
        """The session's indexes that hold every candidate of the query (any one of them will do:
        the records are filtered again once loaded; words are checked against each record's own)."""
        sets = [session_index(session_id, f":type:{kind}")] if kind else []
        sets += [session_index(session_id, f":tag:{t}") for t in tags]
        sets += [session_index(session_id, f":word:{w}") for w in words]
        found = [_Criterion("inter", sets)] if sets else []
        if tags_any:
            found.append(_Criterion("union", [session_index(session_id, f":tag:{t}") for t in tags_any]))
        if after is not None or before is not None or not found:
            low = f"({after}" if after is not None else "-inf"
            high = f"({before}" if before is not None else "+inf"
            found.append(_Criterion("created", [session_index(session_id, ":created")], low, high))
        if q.min_size or q.max_size:
            found.append(_Criterion("size", [session_index(session_id, ":size")], q.min_size, q.max_size or "+inf"))
        return found

    def _narrowest(self, plans: list[tuple[str, list[_Criterion]]], granted: int) -> list[_Criterion]:
        """Each session's criterion with the fewest ids; RESOURCE_EXHAUSTED if they (and `granted`)
        come to more than `max_candidates`. Counts only: SINTERCARD (stopping past the cap), SCARD,
        ZCOUNT."""
        cap = self.max_candidates
        pipe = self.redis.pipeline(transaction=False)
        for _, criteria in plans:
            for criterion in criteria:
                _count(pipe, criterion, cap + 1)
        replies = iter(pipe.execute() if plans else [])
        chosen: list[_Criterion] = []
        total = granted
        for _, criteria in plans:
            counted = []
            for criterion in criteria:
                if criterion.kind == "union":
                    counted.append((sum(int(next(replies)) for _ in criterion.keys), criterion))
                else:
                    counted.append((int(next(replies)), criterion))
            fewest, criterion = min(counted, key=lambda pair: pair[0])
            if fewest:
                total += fewest
                chosen.append(criterion)
        if total > cap:
            raise ResourceExhausted(
                f"the query would examine more than {cap} artifacts (max_query_candidates) across "
                f"{len(plans)} sessions; narrow it: pass session_id, a type, tags, search words or a "
                "created_after/created_before range"
            )
        return chosen


def _count(pipe: Pipeline, criterion: _Criterion, limit: int) -> None:
    if criterion.kind == "inter":
        pipe.sintercard(len(criterion.keys), list[bytes | str | memoryview](criterion.keys), limit=limit)
    elif criterion.kind == "union":
        for key in criterion.keys:
            pipe.scard(key)
    else:
        pipe.zcount(criterion.keys[0], criterion.low, criterion.high)


def _fetch(pipe: Pipeline, criterion: _Criterion) -> None:
    if criterion.kind == "inter":
        pipe.sinter(criterion.keys)
    elif criterion.kind == "union":
        pipe.sunion(criterion.keys)
    else:
        pipe.zrangebyscore(criterion.keys[0], criterion.low, criterion.high)


def _with_words(redis: Redis, ids: list[str], words: list[str]) -> list[str]:
    """Granted artifacts of other sessions did not go through the word sets: check their own."""
    if not words or not ids:
        return ids
    pipe = redis.pipeline(transaction=False)
    for artifact_id in ids:
        pipe.smismember(f"{artifact_key(artifact_id)}:words", words)
    return [i for i, found in zip(ids, pipe.execute(), strict=True) if all(found)]


def _page(page: common_pb2.PageRequest) -> tuple[int, int]:
    limit = page.limit or DEFAULT_PAGE
    if limit > MAX_PAGE:
        raise InvalidArgument(f"page.limit {limit} is above the maximum {MAX_PAGE}")
    return limit, parse_cursor(page.cursor)
