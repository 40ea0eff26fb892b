"""`mixdq allocate`: not built yet."""

from .common import not_built

run = not_built("allocate")


def register(sub):
    return sub.add_parser("allocate", help="(not built yet)")
