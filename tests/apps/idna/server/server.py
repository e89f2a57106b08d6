"""Needs a stdlib module loaded lazily from disk (encodings.idna) inside a worker."""


def punycode(payload):
    return "bücher.example".encode("idna").decode("ascii")
