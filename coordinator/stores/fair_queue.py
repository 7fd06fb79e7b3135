"""Fair order on RQ's queue: round-robin across the principals with queued jobs.

RQ's queue is one Redis list that workers take from the left. A plain enqueue appends, so one
principal's backlog of N jobs delays everybody's next job by N. Here every queued job gets a round
number: a principal's next job goes in the round after its previous queued one, and never in a round
earlier than the one at the head of the queue. The list is kept in round order, so each round holds
at most one job per principal (per submission) and a principal with nothing queued gets the round
right after the head's: its job starts after at most the jobs of two rounds, one per principal with
work in each (docs/adr/0022-fair-scheduling.md has the bound and its measurement).

The jobs stay RQ jobs on RQ's one queue (`rq info`, rq-dashboard, KEDA's list length and `rq empty`
see them as before); only their place in the list differs. The reordering runs in the submit
transaction, right after RQ's enqueue appended the batch's ids: one script takes them off the tail
and puts each after the last job of its round (LINSERT; the common case, a round past the last one,
is an append). Its state, kept beside the queue:
  sp:fair:{queue}:lasts        zset: round -> the last job id queued in it (score = round)
  sp:fair:{queue}:meta         hash: `max` (highest round given), `floor` (the head's round)
  sp:fair:{queue}:p:{principal} the principal's last round (expires with the queue TTL)
A job's round is also kept in its record (`fair_round`), so the head's round can be read; the
round being served only moves forward (a job put back at the head keeps its old round). When the
queue is empty the state starts again. A pivot gone from the list (its job cancelled or
taken meanwhile) falls back to the round before it, then to the tail: order may then be less fair,
never lost.
"""

from __future__ import annotations

from scriptpool.core.keys import PREFIX, job_key
from scriptpool.core.lean_redis import Arg

FAIR_ROUND_FIELD = "fair_round"
"""Field of a job's record: its round on the queue (absent for jobs queued by other means)."""

_REORDER = """
local queue, lasts, meta, mine = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local n = #ARGV - 2
for i = 1, n do redis.call('RPOP', queue) end
local floor
if redis.call('LLEN', queue) == 0 then
  floor = tonumber(redis.call('HGET', meta, 'max') or '0')
  redis.call('DEL', lasts)
else
  -- the round being served; never back: a job put back at the head (a lost worker's retry, a
  -- stranded job, RQ's requeue) keeps the old round of its first placing
  local head = redis.call('LINDEX', queue, 0)
  floor = math.max(tonumber(redis.call('HGET', prefix .. head, 'fair_round') or '0'),
                   tonumber(redis.call('HGET', meta, 'floor') or '0'))
  redis.call('ZREMRANGEBYSCORE', lasts, '-inf', '(' .. floor)
end
local highest = tonumber(redis.call('HGET', meta, 'max') or '0')
local round = math.max(floor, tonumber(redis.call('GET', mine) or '0'))
for i = 1, n do
  local id = ARGV[i + 2]
  round = round + 1
  local placed = false
  if round <= highest then
    local pivots = redis.call('ZREVRANGEBYSCORE', lasts, round, '-inf', 'LIMIT', 0, 3)
    for _, pivot in ipairs(pivots) do
      if redis.call('LINSERT', queue, 'AFTER', pivot, id) > 0 then placed = true; break end
    end
  end
  if not placed then redis.call('RPUSH', queue, id) end
  redis.call('ZREMRANGEBYSCORE', lasts, round, round)
  redis.call('ZADD', lasts, round, id)
  redis.call('HSET', prefix .. id, 'fair_round', round)
  if round > highest then highest = round end
end
redis.call('HSET', meta, 'max', highest, 'floor', floor)
redis.call('SET', mine, round, 'EX', ttl)
return round
"""

REORDER_SCRIPT = _REORDER
"""The reorder script `reorder_command` EVALs (the admission script runs it as a function of its
own: coordinator/stores/admission.py)."""


def _fair_key(queue_name: str) -> str:
    return f"{PREFIX}fair:{queue_name}"


def reorder_command(
    queue_name: str, queue_key: str, principal: str, job_ids: list[str], ttl_seconds: int
) -> tuple[Arg, ...]:
    """The EVAL (no script to load inside a transaction) that puts `job_ids`, just appended to the
    queue by RQ's enqueue, in their fair places. All of them are `principal`'s."""
    base = _fair_key(queue_name)
    keys = (queue_key, f"{base}:lasts", f"{base}:meta", f"{base}:p:{principal}")
    return ("EVAL", _REORDER, len(keys), *keys, job_key(""), max(1, ttl_seconds), *job_ids)


def fair_keys(queue_name: str) -> tuple[str, str]:
    """The queue-wide state keys (for tests and `rq empty` style resets)."""
    base = _fair_key(queue_name)
    return f"{base}:lasts", f"{base}:meta"
