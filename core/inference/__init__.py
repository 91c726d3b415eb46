"""Generation: the engine shared by sample.py, the chat and serve.py, and the HTTP server."""
