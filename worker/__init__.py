"""qr-worker: reads the QR codes on invoice images from a queue, an HTTP shim or a command."""

__version__ = "0.1.0"
