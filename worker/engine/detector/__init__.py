"""The QR detector at inference time: pre/post-processing and the two runtimes."""
