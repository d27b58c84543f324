"""What tests and bench share: the local OpenAI-compatible model server and the process helpers."""
