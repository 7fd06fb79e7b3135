"""The `scriptpool` command line: wires the layers together, holds no logic of its own."""
