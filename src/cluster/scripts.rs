//! What ssegate keeps in Redis, and the Lua scripts that change or read it,
//! each one atomic.
//!
//! All keys share one hash tag, `{<prefix>}`, so that a script may touch
//! several of them (and a future Redis Cluster would keep them together):
//!
//! - `{p}:epoch`, a hash: `id` (the cluster epoch), `created_ms` (Redis
//!   time when it began), `base` (the log's newest id when it began: older
//!   entries, which a lost-data epoch change leaves behind, are another
//!   epoch's) and `last` (the id of the newest event in the log).
//! - `{p}:meta`, a hash: `buffer_events`, `buffer_ttl_ms` that every node
//!   must share.
//! - `{p}:log`, a stream: every event of every topic, in publish order,
//!   fields `E` (epoch), `P` (the id of the log's previous entry), `t`
//!   (topic) and `f` (the frame without its `id:` line). Kept to about `log_max_events`.
//!   Every node reads it (its tail), and `P` tells it when entries it has
//!   not read were trimmed away (`XREAD` itself would skip them silently).
//! - `{p}:t:<topic>`, a stream per topic: the same id and `p`, `f`; at most
//!   `buffer_events` entries, none older than `buffer_ttl` behind the
//!   newest, and the key expires `buffer_ttl + 1s` after its newest entry.
//!   A node replays from it what its own ring no longer has.
//! - `{p}:nodes`, a sorted set: the live nodes, scored by when their last
//!   report expires; `{p}:n:<node>`, a hash per node: topic → its open
//!   streams there; `{p}:counts`, a hash: topic → the sum over the live
//!   nodes, kept by the reports (a node whose report expired is subtracted
//!   by the next report of another), read by a publish for its reply's
//!   `subscribers` in one step.
//!
//! `p` is what makes a gap provable after Redis has trimmed a topic: no
//! event of the topic has an id between `p` and the entry's own (Redis 7.0
//! keeps no record of what `MAXLEN` evicted). When the topic's key is gone,
//! it expired at least `buffer_ttl + 1s` after its newest entry, so `p` is
//! then `(now - buffer_ttl - 999)-0`, or `0-0` while the epoch itself is
//! younger than that (the topic cannot have had an event in it yet).

/// The Redis key names of one deployment (`prefix`).
#[derive(Debug, Clone)]
pub struct Keys {
    pub epoch: String,
    pub meta: String,
    pub log: String,
    pub nodes: String,
    /// `{p}:n:`, followed by a node id: that node's hash of counts.
    pub node_prefix: String,
    pub counts: String,
    topic_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let tag = format!("{{{prefix}}}");
        Keys {
            epoch: format!("{tag}:epoch"),
            meta: format!("{tag}:meta"),
            log: format!("{tag}:log"),
            nodes: format!("{tag}:nodes"),
            node_prefix: format!("{tag}:n:"),
            counts: format!("{tag}:counts"),
            topic_prefix: format!("{tag}:t:"),
        }
    }

    /// A topic's stream. Topic names cannot hold `{` or `}`, so one never
    /// becomes a hash tag of its own.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    /// A node's hash of per-topic stream counts.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.node_prefix)
    }
}

/// Shared by the scripts: stream ids as numbers, and Redis's own clock.
const PRELUDE: &str = r#"
local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function older(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n)
  return string.format('%.0f', n)
end
"#;

/// Joins the prelude and a script body.
macro_rules! script {
    ($body:expr) => {
        redis::Script::new(&format!("{}{}", PRELUDE, $body))
    };
}

/// Start-up and epoch adoption: creates the epoch if there is none (Redis
/// restarted empty, or the first node ever), beginning at the log's newest
/// id or, with no log, at Redis's clock; and the meta hash if there is
/// none. KEYS: epoch, meta, log. ARGV: a fresh epoch, buffer_events,
/// buffer_ttl_ms. Returns {epoch, last, base, buffer_events,
/// buffer_ttl_ms}.
pub fn init() -> redis::Script {
    script!(
        r#"
if not redis.call('HGET', KEYS[1], 'id') then
  local now = now_ms()
  local last
  if redis.call('EXISTS', KEYS[3]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[3])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
  else
    -- No log: it starts at Redis's clock, not at 0-0, so that ids (and
    -- the nodes' sequence numbers) stay near where they were before the
    -- data was lost. The entry is gone at once; the stream keeps its id,
    -- and Redis never gives a lower one.
    last = int(math.max(now - 1, 1)) .. '-0'
    redis.call('XADD', KEYS[3], last, 'seed', '1')
    redis.call('XDEL', KEYS[3], last)
  end
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_ms', int(now), 'last', last, 'base', last)
end
if not redis.call('HGET', KEYS[2], 'buffer_events') then
  redis.call('HSET', KEYS[2], 'buffer_events', ARGV[2], 'buffer_ttl_ms', ARGV[3], 'schema', '1')
end
local epoch = redis.call('HMGET', KEYS[1], 'id', 'last', 'base')
local meta = redis.call('HMGET', KEYS[2], 'buffer_events', 'buffer_ttl_ms')
return {epoch[1], epoch[2], epoch[3], meta[1], meta[2]}
"#
    )
}

/// A node found that Redis lost events it had acknowledged: a new epoch
/// begins at the log's newest id, unless another node began one already.
/// KEYS: epoch. ARGV: the epoch the loss was seen in, a fresh epoch.
/// Returns {epoch, last, base}.
pub fn bump_epoch() -> redis::Script {
    script!(
        r#"
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
  local last = redis.call('HGET', KEYS[1], 'last') or '0-0'
  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'created_ms', int(now_ms()), 'base', last)
end
return redis.call('HMGET', KEYS[1], 'id', 'last', 'base')
"#
    )
}

/// The tail's check on every (re)connect: is the log still the one it was
/// reading? KEYS: epoch, log. ARGV: the tail's cursor. Returns {epoch or
/// nil, last or nil, base or nil, whether the cursor entry is in the log,
/// the oldest entry's id or nil}.
pub fn check() -> redis::Script {
    script!(
        r#"
local epoch = redis.call('HMGET', KEYS[1], 'id', 'last', 'base')
local at = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest_id = false
if #oldest > 0 then oldest_id = oldest[1][1] end
return {epoch[1], epoch[2], epoch[3], #at, oldest_id}
"#
    )
}

/// Publishes, several at once (see `publisher`): checks the epoch (and
/// that Redis is not behind what the publishing node has already read or
/// acknowledged: acknowledged events were lost), then for each publish, in
/// order, appends every frame to the log (Redis chooses the id) and the
/// same id to the topic's stream, trims both, sets the topic's expiry, and
/// reads the topic's streams over every node. All of it or none: the first
/// write refused (out of memory) refuses the whole call. KEYS: epoch, log,
/// counts, then each publish's topic stream. ARGV: epoch, buffer_events,
/// buffer_ttl_ms, log_max_events, the newest id the node knows of (or ''),
/// then for each publish its topic, its number of frames, and the frames.
/// Returns {'OK', then for each publish: subscribers, number of ids,
/// ids...}, {'EPOCH', current} or {'LOST', last}.
///
/// Each call costs Redis about as much as a small command before it does
/// anything, and each command in it about as much again: hence publishes
/// go several to a call, a topic's newest id and subscribers are read and
/// its expiry set once per call however many of its publishes the call
/// carries (a busy topic's publishes share them), Redis's clock is read
/// only when a topic has no entry, and a topic is trimmed by age on about
/// one call in sixteen (by count on every publish; a replay skips entries older
/// than `buffer_ttl` anyway, so that trim only frees memory).
///
/// An id whose sequence part reached 2^20 (more than a million events in
/// one millisecond of Redis's clock, which only a clock stepping back can
/// bring) is replaced, before anyone can read it, by the next millisecond's
/// first: node sequence numbers have 20 bits for it (see `ids`).
pub fn publish() -> redis::Script {
    script!(
        r#"
local epoch = redis.call('HMGET', KEYS[1], 'id', 'last', 'created_ms')
if epoch[1] ~= ARGV[1] then return {'EPOCH', epoch[1] or ''} end
local last = epoch[2] or '0-0'
if ARGV[5] ~= '' and older(last, ARGV[5]) then return {'LOST', last} end
local ttl = tonumber(ARGV[3])
local reply = {'OK'}
local log_prev = last
-- Per topic of this call, in order of first appearance: its key, its
-- newest id so far, its subscribers.
local topics, order = {}, {}
local a = 6
for k = 4, #KEYS do
  local topic, n = ARGV[a], tonumber(ARGV[a + 1])
  local seen = topics[topic]
  if not seen then
    local prev
    local newest = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
    if #newest > 0 then
      prev = newest[1][1]
    else
      local now = now_ms()
      if now - tonumber(epoch[3] or '0') < ttl + 1000 then
        prev = '0-0'
      else
        prev = int(now - ttl - 999) .. '-0'
      end
    end
    seen = {key = KEYS[k], prev = prev, added = false,
      subscribers = redis.call('HGET', KEYS[3], topic) or '0'}
    topics[topic] = seen
    order[#order + 1] = seen
  end
  reply[#reply + 1] = seen.subscribers
  reply[#reply + 1] = n
  local prev = seen.prev
  for i = a + 2, a + 1 + n do
    local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
      'E', ARGV[1], 'P', log_prev, 't', topic, 'f', ARGV[i])
    local ms, seq = parse_id(id)
    if seq >= 1048576 then
      redis.call('XDEL', KEYS[2], id)
      id = int(ms + 1) .. '-0'
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id,
        'E', ARGV[1], 'P', log_prev, 't', topic, 'f', ARGV[i])
    end
    redis.call('XADD', seen.key, 'MAXLEN', ARGV[2], id, 'p', prev, 'f', ARGV[i])
    prev = id
    log_prev = id
    reply[#reply + 1] = id
  end
  seen.prev = prev
  seen.added = seen.added or n > 0
  a = a + 2 + n
end
for _, seen in ipairs(order) do
  if seen.added then
    local newest_ms = parse_id(seen.prev)
    if newest_ms % 16 == 0 then
      redis.call('XTRIM', seen.key, 'MINID', int(math.max(0, newest_ms - ttl)) .. '-0')
    end
    redis.call('PEXPIREAT', seen.key, int(newest_ms + ttl + 1000))
  end
end
redis.call('HSET', KEYS[1], 'last', log_prev)
return reply
"#
    )
}

/// A replay read (read only): a topic's entries in `(after, upto]` and, if
/// there are none, the first entry after `after` at all (for its `p`).
/// KEYS: topic. ARGV: after, upto, count. Returns {now_ms, key exists,
/// entries, first entry after or empty}.
pub fn replay() -> redis::Script {
    script!(
        r#"
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local beyond = {}
if #entries == 0 then
  beyond = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', 1)
end
return {int(now_ms()), redis.call('EXISTS', KEYS[1]), entries, beyond}
"#
    )
}

/// A node's periodic report: the topics whose stream counts changed (a
/// count of 0 removes the topic), added to the cluster's sums; its presence
/// for a while; the nodes whose presence expired (killed) taken out of the
/// sums; and, for the tail's lag, the epoch and newest id. KEYS: nodes,
/// this node's hash, epoch, counts. ARGV: node id, report lifetime in ms,
/// the prefix of node hashes, then topic and count pairs. Returns {whether
/// the node's hash existed before, epoch or nil, last or nil}: a hash gone
/// (Redis lost it) means everything must be reported again. (The expired
/// nodes' hashes are not declared keys: fine on a standalone Redis.)
pub fn report() -> redis::Script {
    script!(
        r#"
local now = now_ms()
local existed = redis.call('EXISTS', KEYS[2])
local function add(topic, delta)
  if redis.call('HINCRBY', KEYS[4], topic, delta) <= 0 then
    redis.call('HDEL', KEYS[4], topic)
  end
end
for i = 4, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if n ~= old then
    add(ARGV[i], n - old)
    if n == 0 then
      redis.call('HDEL', KEYS[2], ARGV[i])
    else
      redis.call('HSET', KEYS[2], ARGV[i], n)
    end
  end
end
redis.call('ZADD', KEYS[1], int(now + tonumber(ARGV[2])), ARGV[1])
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now))) do
  local hash = ARGV[3] .. node
  local counts = redis.call('HGETALL', hash)
  for j = 1, #counts, 2 do
    add(counts[j], -tonumber(counts[j + 1]))
  end
  redis.call('DEL', hash)
  redis.call('ZREM', KEYS[1], node)
end
local epoch = redis.call('HMGET', KEYS[3], 'id', 'last')
return {existed, epoch[1], epoch[2]}
"#
    )
}
