"""`mixdq benchmark`: not built yet."""

from .common import not_built

run = not_built("benchmark")


def register(sub):
    return sub.add_parser("benchmark", help="(not built yet)")
