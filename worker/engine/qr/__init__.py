"""Our own soft-decision QR Code decoder (issue 19): reads a symbol that zxing-cpp located
but could not read, or that a detector boxed, using area-averaged module values with a
confidence each, Reed-Solomon with erasures, and checks strong enough never to misread.

    from worker.engine.qr import decode
    read = decode(gray, quad, budget_units=20)   # SoftRead or None; units of work

See decoder.py (the steps and the format/version limits), codewords.py (the Reed-Solomon
margin and the library) and bitstream.py (the output, identical to zxing-cpp's).
"""

from worker.engine.qr.decoder import NotASymbol, SoftRead, decode, examine

__all__ = ["NotASymbol", "SoftRead", "decode", "examine"]
