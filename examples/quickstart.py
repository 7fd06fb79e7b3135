# quickstart: create a session, read it back, list sessions, return a summary.
# Run it with `scriptpool run examples/quickstart.py`: the sandbox provides Session and friends.
# ruff: noqa: F821
session_id = Session.create(
    name="quickstart",
    tags=["demo"],
    metadata={"project": "scriptpool", "answer": 42},
)
print("created session " + session_id)

session = Session.get(session_id)
print(f"state: {session.state}, has tag demo: {session.has_tag('demo')}")

names = [s.name for s in Session.list(tags=["demo"])]
print(f"sessions tagged demo: {len(names)}")

# the last expression is the job's result
{"session_id": session_id, "name": session.name, "metadata": session.metadata, "listed": len(names)}
