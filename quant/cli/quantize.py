"""`mixdq quantize`: not built yet."""

from .common import not_built

run = not_built("quantize")


def register(sub):
    return sub.add_parser("quantize", help="(not built yet)")
