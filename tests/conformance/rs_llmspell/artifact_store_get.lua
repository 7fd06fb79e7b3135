-- Conformance (issue 16): positional Artifact.store and Artifact.get, text/JSON/binary.
-- Mirrors: examples/lua/session/artifacts.lua steps 2-4 and 6 (lexlapax/rs-llmspell);
-- the tool/agent output there is replaced by literal strings.
-- Relies on: store(sid, type, name, content, meta) -> id with content_hash/session_id;
-- get -> {content, metadata = {name, artifact_type, mime_type, size, tags, custom}}; JSON global.

local sid = Session.create({name = "artifact demo", tags = {"demo"}})
Session.setCurrent(sid)

local report = "Results\n\nQ4 grew 15% over Q3.\nBest regions: EMEA, APAC"
local text_id = Artifact.store(sid, "tool_result", "analysis.txt", report, {
  mime_type = "text/plain",
  tags = {"analysis", "q4"},
  tool = "analyzer",
  seconds = 2.5,
})
assert(type(text_id.content_hash) == "string" and #text_id.content_hash >= 16)
assert(text_id.content_hash:sub(1, 8):match("^%x+$"), "content_hash is hex")
assert(text_id.session_id == sid)

local metrics = {revenue = 1500000, growth = 0.15, regions = {"EMEA", "APAC", "AMER"}}
local json_id = Artifact.store(sid, "agent_output", "metrics.json", JSON.stringify(metrics),
  {mime_type = "application/json", tags = {"metrics"}})

local png = string.char(0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A) .. string.rep("\0\255", 300)
local png_id = Artifact.store(sid, "system_generated", "chart.png", png,
  {mime_type = "image/png", description = "chart"})

-- text
local t = Artifact.get(sid, text_id)
assert(t.content == report)
assert(t.metadata.name == "analysis.txt")
assert(type(t.metadata.artifact_type) == "string" and t.metadata.artifact_type ~= "")
assert(t.metadata.mime_type == "text/plain")
assert(t.metadata.size == #report)

-- JSON round trip through an artifact
local j = Artifact.get(sid, json_id)
local decoded = JSON.parse(j.content)
assert(decoded.revenue == 1500000 and decoded.growth == 0.15)
assert(#decoded.regions == 3 and decoded.regions[1] == "EMEA")

-- binary is byte-exact
local b = Artifact.get(sid, png_id)
assert(b.content == png, "binary content round-trips byte for byte")
assert(b.metadata.size == #png)
assert(b.metadata.mime_type == "image/png")
local h1, h2, h3, h4 = b.content:byte(1, 4)
assert(h1 == 0x89 and h2 == 0x50 and h3 == 0x4E and h4 == 0x47)

Session.complete(sid)
return {
  text_type = t.metadata.artifact_type,
  json_type = j.metadata.artifact_type,
  png_size = b.metadata.size,
}
