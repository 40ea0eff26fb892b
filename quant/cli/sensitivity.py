"""`mixdq sensitivity`: not built yet."""

from .common import not_built

run = not_built("sensitivity")


def register(sub):
    return sub.add_parser("sensitivity", help="(not built yet)")
