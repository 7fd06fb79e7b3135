// quickstart: create a session, read it back, list sessions, return a summary.
const id = Session.create({
  name: "quickstart",
  tags: ["demo"],
  metadata: { project: "scriptpool", answer: 42 },
});
console.log("created session " + id);

const session = Session.get(id);
console.log("state: " + session.state + ", has tag demo: " + session.hasTag("demo"));

const names = Session.list({ tags: ["demo"] }).map((s) => s.name);
console.log("sessions tagged demo: " + names.length);

({ session_id: id, name: session.name, metadata: session.metadata, listed: names.length });
