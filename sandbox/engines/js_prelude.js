// The JavaScript side of the sandbox. Evaluated once per job in a fresh QuickJS instance by an
// indirect eval, so its stack frames read "<input>" and never pass for the script's own lines
// (the script's frames read "eval_script"). It takes the host functions and its configuration
// from globalThis, removes them from there, builds the script's globals and returns the helpers
// the Python side needs: `configure(job)` (seed, clock, INPUT: once, before the script),
// `finish(value)`, `describe(error)` and `clockReads()`.
//
// Limits: a limit hit inside a host function is remembered on the Python side, which also makes
// QuickJS's interrupt poll stop the script at its next check; throwing here only unwinds faster.
// A script that catches that error cannot continue past the next poll, and its result is ignored.
(function () {
  "use strict";
  const G = globalThis;
  const hostCall = G.__scriptpool_host_call;
  const hostPrint = G.__scriptpool_host_print;
  const setup = G.__scriptpool_setup;
  delete G.__scriptpool_host_call;
  delete G.__scriptpool_host_print;
  delete G.__scriptpool_setup;
  delete G.__scriptpool_prelude;

  const { catalog, aliases, maxDepth } = setup;

  // The script's clock (sandbox/script_clock.py has the rule): every read of Date.now(), new Date()
  // and Date() is recorded (up to maxClockReads) and a replay gives the recorded job's reads back
  // first, then the clock shifted to the recorded job's start. Set by configure().
  let clockOffsetMs = 0;
  let clockReplay = [];
  let clockCount = 0;
  let maxClockReads = 0;
  const clockReads = [];
  const RealDate = Date;
  const realNow = RealDate.now;
  function now() {
    const index = clockCount++;
    const value = index < clockReplay.length ? clockReplay[index] : realNow() + clockOffsetMs;
    if (index < maxClockReads) clockReads.push(value);
    return value;
  }
  const ScriptDate = function Date(...args) {
    if (!new.target) return new RealDate(now()).toString();
    return Reflect.construct(RealDate, args.length === 0 ? [now()] : args, new.target);
  };
  ScriptDate.prototype = RealDate.prototype;
  ScriptDate.now = now;
  ScriptDate.UTC = RealDate.UTC;
  ScriptDate.parse = RealDate.parse;
  G.Date = ScriptDate;

  // Math.random from the job's seed (mulberry32), so a replay can feed the recorded seed back.
  let rngState = 0; // set by configure(), before the script runs
  Math.random = function random() {
    rngState = (rngState + 0x6d2b79f5) >>> 0;
    let t = rngState;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const ObjectProto = Object.prototype;
  const getProto = Object.getPrototypeOf;
  const isArray = Array.isArray;
  const ownKeys = Object.keys;
  const freeze = Object.freeze;
  const defineProperty = Object.defineProperty;
  const JSONstringify = JSON.stringify;
  const StringCtor = String;
  const ErrorCtor = Error;
  const Uint8ArrayCtor = Uint8Array;
  const ArrayBufferCtor = ArrayBuffer;
  const apply = Reflect.apply;
  const regexTest = RegExp.prototype.test;
  const loneSurrogate = /\p{Cs}/u; // only an unpaired surrogate: a pair is one code point under /u

  // QuickJS implements V8's stack trace API: an Error.prepareStackTrace set by the script would get
  // CallSite objects whose getFunction()/getThis() hand out the functions and receivers on the
  // stack, the prelude's own (call, toPlain) among them. Pinned to undefined, it can never be set
  // (QuickJS reads it from the original Error constructor, whatever globalThis.Error becomes).
  defineProperty(ErrorCtor, "prepareStackTrace", { value: undefined, writable: false, configurable: false });

  // ---------------------------------------------------------------- values
  // Plain values only: null, booleans, numbers, bigints, strings, Uint8Array/ArrayBuffer (bytes),
  // arrays and plain objects. `undefined` is null in arrays and an absent key in objects.
  const SessionProto = {};

  function kindOf(value) {
    if (typeof value === "function") return "function";
    if (typeof value === "symbol") return "symbol";
    let name = "object";
    try {
      const ctor = value.constructor;
      if (typeof ctor === "function" && typeof ctor.name === "string" && ctor.name) name = ctor.name;
    } catch (_) {
      // a throwing getter tells us nothing: keep "object"
    }
    return name;
  }

  function notPlain(value) {
    return new TypeError("a JS " + kindOf(value) + " cannot be passed or returned as a value");
  }

  // A lone surrogate cannot cross to the host as text (it failed there as "Host function failed").
  function checkText(text) {
    if (apply(regexTest, loneSurrogate, [text])) {
      throw new TypeError("a string holds a lone surrogate (it is not valid Unicode text)");
    }
    return text;
  }

  function toPlain(value, depth, seen) {
    if (value === null || value === undefined) return null;
    const type = typeof value;
    if (type === "string") return checkText(value);
    if (type === "boolean" || type === "number" || type === "bigint") return value;
    if (type !== "object") throw notPlain(value);
    if (value instanceof Uint8ArrayCtor || value instanceof ArrayBufferCtor) return value;
    if (depth >= maxDepth || seen.has(value)) {
      throw new TypeError("a value that contains itself (or is nested deeper than " + maxDepth +
        " levels) cannot be passed or returned");
    }
    seen.add(value);
    try {
      if (isArray(value)) {
        const out = [];
        for (let i = 0; i < value.length; i++) out.push(toPlain(value[i], depth + 1, seen));
        return out;
      }
      const proto = getProto(value);
      if (proto !== ObjectProto && proto !== null && proto !== SessionProto && proto !== HookProto) {
        throw notPlain(value); // (a hook handle crosses as {hook_id}: accepted wherever its id is)
      }
      const out = {};
      for (const key of ownKeys(value)) {
        const item = value[key];
        if (item !== undefined) out[checkText(key)] = toPlain(item, depth + 1, seen);
      }
      return out;
    } finally {
      seen.delete(value);
    }
  }

  function plain(value) {
    return toPlain(value, 0, new Set());
  }

  // ---------------------------------------------------------------- errors
  function callError(code, message) {
    const e = new ErrorCtor(code + ": " + message);
    defineProperty(e, "code", { value: code, enumerable: true });
    return e;
  }

  function limitError() {
    return new ErrorCtor("limit exceeded");
  }

  // ---------------------------------------------------------------- output
  function show(value, depth, seen) {
    const type = typeof value;
    if (type === "string") return depth === 0 ? value : JSONstringify(value);
    if (type === "bigint") return StringCtor(value) + "n";
    if (type === "function") return "[Function" + (value.name ? ": " + value.name : " (anonymous)") + "]";
    if (type === "symbol") return value.toString();
    if (value === null || type !== "object") return StringCtor(value);
    if (value instanceof ErrorCtor) return value.stack ? StringCtor(value) + "\n" + value.stack : StringCtor(value);
    if (seen.has(value)) return "[Circular]";
    if (depth > 4) return isArray(value) ? "[Array]" : "[Object]";
    seen.add(value);
    try {
      if (value instanceof Uint8ArrayCtor) {
        return "Uint8Array(" + value.length + ") [" + Array.prototype.join.call(value, ", ") + "]";
      }
      if (isArray(value)) {
        const parts = [];
        for (let i = 0; i < value.length; i++) parts.push(show(value[i], depth + 1, seen));
        return "[" + parts.join(", ") + "]";
      }
      const parts = [];
      for (const key of ownKeys(value)) parts.push(key + ": " + show(value[key], depth + 1, seen));
      return parts.length ? "{ " + parts.join(", ") + " }" : "{}";
    } finally {
      seen.delete(value);
    }
  }

  function log(...args) {
    const parts = [];
    for (const arg of args) parts.push(show(arg, 0, new Set()));
    if (!hostPrint(parts.join(" ") + "\n")) throw limitError();
  }

  G.print = log;
  G.console = freeze({ log: log, info: log, warn: log, error: log, debug: log });

  // ---------------------------------------------------------------- globals
  function call(op, args) {
    let packed;
    try {
      packed = [];  // each argument is a value of its own: its depth counts from it
      for (let i = 0; i < args.length; i++) packed.push(toPlain(args[i], 0, new Set()));
    } catch (e) {
      throw callError("INVALID_ARGUMENT", e.message);
    }
    const reply = hostCall(op, packed);
    if (reply[0] === "ok") {
      if (handlers.length && !delivering) deliver();
      return reply[1];
    }
    if (reply[0] === "err") throw callError(reply[1], reply[2]);
    throw limitError();
  }

  // Event.on / Hook.register callbacks: kept here, run after each later global call returns, with
  // every matching event that has arrived by then (subscription + Event.receive, or Hook.receive for
  // a hook, on the wire). `handlers` is kept in priority order (lowest value first, then
  // registration order; Event.on callbacks are "normal", 0). Delivery goes in rounds, each giving
  // every handler that still has events its next one: an event several hooks receive reaches them
  // in priority order.
  const handlers = [];
  let delivering = false;
  function nextEvent(h) {
    return h.hook ? call("Hook.receive", [h.id]) : call("Event.receive", [h.id, 0]);
  }
  function deliver() {
    delivering = true;
    try {
      let round = handlers.slice();
      while (round.length > 0) {
        const again = [];
        for (const h of round) {
          if (!h.active) continue;
          const e = nextEvent(h);
          if (e === null || e === undefined) continue;
          again.push(h);
          h.fn(e);
        }
        round = again;
      }
    } finally {
      delivering = false;
    }
  }
  function checkCallback(kind, fn) {
    if (typeof fn !== "function") throw callError("INVALID_ARGUMENT", kind + ": the callback must be a function");
  }
  function addHandler(h) {
    let at = handlers.findIndex((other) => other.priority > h.priority);
    if (at < 0) at = handlers.length;
    handlers.splice(at, 0, h);
    return h;
  }
  function dropHandler(id) {
    const i = handlers.findIndex((h) => h.id === id);
    if (i >= 0) {
      handlers[i].active = false;
      handlers.splice(i, 1);
    }
  }
  // Hook.register returns a handle (rs-llmspell's): id(), hook_point()/hookPoint() (both throw once
  // the hook is unregistered) and unregister() (true the first time, false after); its field
  // hook_id and String(handle) are the id. Hook.unregister takes it or the id string.
  const hookRecords = new WeakMap();
  function liveRecord(handle) {
    const rec = hookRecords.get(handle);
    if (rec === undefined || !rec.active) throw callError("FAILED_PRECONDITION", "hook already unregistered");
    return rec;
  }
  const HookProto = {
    id() { return liveRecord(this).id; },
    hook_point() { return liveRecord(this).what; },
    hookPoint() { return liveRecord(this).what; },
    unregister() { return unregisterHook(this); },
    toString() { return this.hook_id; },
  };
  freeze(HookProto);
  function registerHook(point, fn, priority) {
    checkCallback("Hook.register", fn);
    const info = call("Hook.register", priority === undefined ? [point] : [point, priority]);
    const rec = addHandler({ id: info.hook_id, what: info.hook_point, fn: fn, hook: true,
                             priority: info.priority_value, active: true });
    const handle = Object.create(HookProto);
    defineProperty(handle, "hook_id", { value: info.hook_id, enumerable: true });
    hookRecords.set(handle, rec);
    return freeze(handle);
  }
  function unregisterHook(hook) {
    let id;
    if (typeof hook === "string") id = hook;
    else if (hook !== null && typeof hook === "object" && hookRecords.has(hook)) id = hookRecords.get(hook).id;
    else return false;
    if (handlers.some((h) => h.id === id && h.hook)) dropHandler(id);
    return call("Hook.unregister", [id]);
  }
  const callbacks = {
    "Event.on": (pattern, fn) => {
      checkCallback("Event.on", fn);
      const id = call("Event.on", [pattern]);
      addHandler({ id: id, fn: fn, hook: false, priority: 0, active: true });
      return id;
    },
    "Event.unsubscribe": (id) => {
      if (id !== null && typeof id === "object" && hookRecords.has(id)) id = hookRecords.get(id).id;
      dropHandler(id);
      return call("Event.unsubscribe", [id]);
    },
    "Hook.register": registerHook,
    "Hook.unregister": unregisterHook,
  };

  function toSession(value) {
    if (value === null || typeof value !== "object" || isArray(value)) return value;
    const session = Object.create(SessionProto);
    for (const key of ownKeys(value)) session[key] = value[key];
    return session;
  }

  function toSessionList(list) {
    return isArray(list) ? list.map(toSession) : list;
  }

  // Artifact.store/update answer {id, content_hash, session_id, version}; scripts get the id string.
  const artifactId = (r) => (r !== null && typeof r === "object" && typeof r.id === "string" ? r.id : r);

  // Artifact.get leaves large content out; reading `.content` fetches it once (Artifact.getContent).
  const lazyArtifact = (r) => {
    if (r === null || typeof r !== "object" || isArray(r) || "content" in r) return r;
    let loaded = false;
    let content;
    defineProperty(r, "content", {
      enumerable: true,
      get() {
        if (!loaded) {
          content = call("Artifact.getContent", [r.session_id, r.id, r.version]);
          loaded = true;
        }
        return content;
      },
    });
    return r;
  };

  // Paged operations answer {items, next_cursor}: the script gets the items as its array, with the
  // (non-enumerable) property `next_cursor` when more remain; passing it back as `cursor` gives the
  // next page.
  const toPage = (convert) => (page) => {
    if (page === null || typeof page !== "object" || isArray(page) || !isArray(page.items)) return page;
    const items = convert ? convert(page.items) : page.items;
    if (page.next_cursor !== null && page.next_cursor !== undefined) {
      defineProperty(items, "next_cursor", { value: page.next_cursor, writable: true, configurable: true });
    }
    return items;
  };

  const post = {
    "Artifact.get": lazyArtifact,
    "Artifact.store": artifactId,
    "Artifact.update": artifactId,
    "Artifact.storeFile": artifactId,
    "Artifact.list": toPage(),
    "Artifact.query": toPage(),
    "Artifact.findByType": toPage(),
    "Artifact.findByTag": toPage(),
    "Artifact.search": toPage(),
    "Session.get": toSession,
    "Session.list": toPage(toSessionList),
    "Session.getTimeline": toPage(),
    "Session.load": toSession,
  };

  // Session.replay(id, {speed, on_progress, on_hook}): the callbacks run here, in the calling
  // script, as the replay advances (the worker waits for new replay timeline entries between calls).
  function replay(id, opts) {
    const plainOpts = {};
    let onProgress = null;
    let onHook = null;
    if (opts !== null && typeof opts === "object") {
      for (const key of ownKeys(opts)) {
        if (key === "on_progress" || key === "onProgress") onProgress = opts[key];
        else if (key === "on_hook" || key === "onHook") onHook = opts[key];
        else plainOpts[key] = opts[key];
      }
    }
    const replayId = call("Session.replay", [id, plainOpts]);
    if (onProgress || onHook) {
      let after = "";
      for (;;) {
        const batch = call("Session.awaitReplay", [replayId, after]);
        for (const e of batch.entries) {
          after = e.id;
          if (e.type === "replay.progress") {
            if (onProgress) onProgress(e.data.progress);
          } else if (e.hook && onHook) {
            onHook({ hook_point: e.type, session_id: replayId, job_id: e.job_id, data: e.data,
                     timestamp: e.timestamp, timestamp_unix: e.timestamp_unix });
          }
        }
        if (batch.finished) break;
      }
    }
    return replayId;
  }

  for (const globalName of ownKeys(catalog)) {
    const g = {};
    for (const op of catalog[globalName]) {
      const full = globalName + "." + op;
      const after = post[full];
      if (full === "Session.replay") g[op] = replay;
      else if (callbacks[full]) g[op] = callbacks[full];
      else g[op] = after ? (...args) => after(call(full, args)) : (...args) => call(full, args);
    }
    const extra = aliases[globalName] || {};
    for (const alias of ownKeys(extra)) g[alias] = g[extra[alias]];
    G[globalName] = freeze(g);
  }

  // ---------------------------------------------------------------- files
  // `fs`: the job's own files (sandbox/scratch_files.py), its scratch directory seen as "/". Every
  // method is synchronous and throws the categorised error (code, message) on failure.
  const textEncoding = (enc) => {
    const name = enc !== null && typeof enc === "object" ? enc.encoding : enc;
    if (name === undefined || name === null) return false;
    if (name === "utf8" || name === "utf-8") return true;
    throw callError("INVALID_ARGUMENT", "fs: only the utf8 encoding is available (or none, for a Uint8Array)");
  };
  const fs = {
    readFile: (path, encoding) => call("File.readAll", [path, textEncoding(encoding)]),
    writeFile: (path, data) => { call("File.writeAll", [path, data, false]); },
    appendFile: (path, data) => { call("File.writeAll", [path, data, true]); },
    exists: (path) => call("File.exists", [path]),
    remove: (path) => { call("File.remove", [path]); },
    rename: (from, to) => { call("File.rename", [from, to]); },
    list: (dir) => call("File.list", [dir === undefined ? "/" : dir]),
  };
  fs.readFileSync = fs.readFile;
  fs.writeFileSync = fs.writeFile;
  fs.appendFileSync = fs.appendFile;
  fs.existsSync = fs.exists;
  fs.unlink = fs.unlinkSync = fs.remove;
  fs.renameSync = fs.rename;
  fs.readdir = fs.readdirSync = fs.list;
  G.fs = freeze(fs);

  const Session = G.Session;
  SessionProto.suspend = function () { return Session.suspend(this.id); };
  SessionProto.resume = function () { return Session.resume(this.id); };
  SessionProto.complete = function () { return Session.complete(this.id); };
  SessionProto.save = function () { return Session.save(this.id); };
  SessionProto.hasTag = function (tag) {
    return isArray(this.tags) && this.tags.includes(tag);
  };
  // addTag/removeTag start from the session's current tags (not this object's possibly stale copy).
  SessionProto.addTag = function (tag) {
    const current = Session.getTags(this.id);
    this.tags = current.includes(tag) ? current : Session.setTags(this.id, [...current, tag]);
    return this.tags;
  };
  SessionProto.removeTag = function (tag) {
    this.tags = Session.setTags(this.id, Session.getTags(this.id).filter((t) => t !== tag));
    return this.tags;
  };
  SessionProto.add_tag = SessionProto.addTag;
  SessionProto.remove_tag = SessionProto.removeTag;
  SessionProto.has_tag = SessionProto.hasTag;
  freeze(SessionProto);

  // The job's own settings, applied by the host once the job has arrived (the instance may have
  // been prepared before it, in the spare child) and before any of the script's code runs.
  let configured = false;
  function configure(job) {
    if (configured) throw new Error("the sandbox was already configured for a job");
    configured = true;
    rngState = job.seed >>> 0;
    clockOffsetMs = job.clockOffsetMs || 0;
    clockReplay = job.clockReplay || [];
    maxClockReads = job.maxClockReads || 0;
    G.INPUT = job.inputs;
  }

  // ---------------------------------------------------------------- for the host
  function describe(e) {
    try {
      if (e !== null && typeof e === "object" && typeof e.message === "string") {
        const code = typeof e.code === "string" ? e.code : "";
        const name = typeof e.name === "string" && e.name ? e.name : "Error";
        return {
          message: code ? e.message : name + ": " + e.message,
          stack: typeof e.stack === "string" ? e.stack : "",
        };
      }
      return { message: StringCtor(e), stack: "" };
    } catch (_) {
      return { message: "the script threw a value that cannot be shown", stack: "" };
    }
  }

  return freeze({
    configure: configure,
    finish: plain,
    describe: describe,
    clockReads: () => clockReads.slice(),
  });
})();
