"""`mixdq run`: not built yet."""

from .common import not_built

run = not_built("run")


def register(sub):
    return sub.add_parser("run", help="(not built yet)")
