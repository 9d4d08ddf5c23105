"""The HTTP shim: the engine behind a small synchronous API (`qrw serve`)."""
