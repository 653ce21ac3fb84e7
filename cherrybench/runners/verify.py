"""`cherrybench verify NAME.manifest.json`: recheck the files a provenance manifest
names (inputs, subset, report) against the sha256 it recorded and say exactly
what changed; for a changed subset, which records were removed, added or changed.
Exit status 0 when everything is intact, 1 when something changed or is missing,
2 when the manifest itself cannot be read (see cherrybench.manifest)."""

from __future__ import annotations

import argparse

from cherrybench.manifest import check_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="a NAME.manifest.json written beside a subset by select or compare")
    parser.add_argument("--base", metavar="DIR",
                        help="folder the manifest's input paths are relative to (default: the manifest's folder, or "
                             "the working directory for a manifest logged by compare, as the manifest says)")


def run(args) -> int:
    checks = check_manifest(args.manifest, args.base)
    for check in checks:
        print(check.line())
    bad = [c for c in checks if c.status != "ok"]
    if bad:
        print(f"{args.manifest}: {len(bad)} of {len(checks)} files changed or missing")
        return 1
    print(f"{args.manifest}: intact ({len(checks)} files match)")
    return 0
