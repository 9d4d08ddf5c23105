"""The queue side of qr-worker: RQ jobs in, results out, in a form any language can speak."""
