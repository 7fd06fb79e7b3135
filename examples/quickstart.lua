-- quickstart: create a session, read it back, list sessions, return a summary.
local id = Session.create{
  name = "quickstart",
  tags = {"demo"},
  metadata = {project = "scriptpool", answer = 42},
}
print("created session " .. id)

local session = Session.get(id)
print("state: " .. session.state .. ", has tag demo: " .. tostring(session:hasTag("demo")))

local names = {}
for _, s in ipairs(Session.list{tags = {"demo"}}) do
  names[#names + 1] = s.name
end
print("sessions tagged demo: " .. #names)

return {session_id = id, name = session.name, metadata = session.metadata, listed = #names}
