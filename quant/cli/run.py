"""`mixdq run`: the whole pipeline from one config."""

from __future__ import annotations


def register(sub):
    from ..run import presets

    p = sub.add_parser("run", help="calibrate -> sensitivity -> allocate -> quantize -> benchmark",
                       description="Run every stage of a config (configs/*.yaml), each in its own "
                       "subfolder of --out, skipping stages that are complete.")
    p.add_argument("--config", required=True, metavar="CONFIG",
                   help="run config: a YAML file or a bundled preset name "
                   f"({', '.join(presets())})")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set calibrate.num_prompts=64")
    return p


def run(args) -> int:
    from ..run import RunConfig
    from ..run import run as run_all

    config = RunConfig.load(args.config, args.set)
    results = run_all(config, args.out)
    width = max(len(name) for name, _ in results)
    print("\nstage".ljust(width + 3) + "status")
    for name, status in results:
        print(f"  {name.ljust(width)}  {status}")
    report = f"{args.out}/benchmark/report.md"
    print(f"\nreport: {report}" if config.benchmark is not None else "")
    return 0
