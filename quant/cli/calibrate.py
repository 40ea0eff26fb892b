"""`mixdq calibrate`: not built yet."""

from .common import not_built

run = not_built("calibrate")


def register(sub):
    return sub.add_parser("calibrate", help="(not built yet)")
