"""Keep the local Bento store bounded after an image build.

`deploy/build_image.sh` runs `bentoml build` each time, and every Bento whose sources changed is a new
~84 MiB entry in the store (the shipped models travel inside it); the image carries the Bento it was
built from (label ai.visionzoo.bento). So after a build the older Bentos of the same name are
deleted, keeping the newest `--keep` (the one just built always among them):

    python deploy/prune_bentos.py visionzoo:TAG [--keep 3] [--bentoml bentoml]

A Bento that cannot be listed or deleted is reported on stderr and left; the build does not fail.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def stale_bentos(listing: list[dict], current: str, keep: int) -> list[str]:
    """Tags of `listing` (`bentoml list NAME -o json`) to delete: all but the newest `keep` by creation
    time, never `current`."""
    newest_first = sorted(listing, key=lambda bento: bento["creation_time"], reverse=True)
    kept = {current} | {bento["tag"] for bento in newest_first[:max(keep, 1)]}
    return [bento["tag"] for bento in newest_first if bento["tag"] not in kept]


def _bentoml(command: list[str]) -> tuple[bool, str]:
    """(succeeded, stdout or the reason it did not)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    return done.returncode == 0, done.stdout if done.returncode == 0 else done.stderr.strip()[-300:]


def prune(current: str, keep: int, bentoml: str = "bentoml") -> list[str]:
    """Delete the stale Bentos of `current`'s name; returns the tags deleted."""
    name = current.split(":", 1)[0]
    listed, output = _bentoml([bentoml, "list", name, "-o", "json"])
    try:
        listing = json.loads(output or "[]") if listed else None
    except ValueError:
        listed, output = False, f"not JSON: {output[:200]!r}"
    if not listed:
        print(f"prune_bentos: could not list the Bentos named {name}: {output}", file=sys.stderr)
        return []
    deleted = []
    for tag in stale_bentos(listing, current, keep):
        done, reason = _bentoml([bentoml, "delete", "-y", tag])
        if done:
            deleted.append(tag)
        else:
            print(f"prune_bentos: could not delete {tag}: {reason}", file=sys.stderr)
    return deleted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="build_image.sh calls it with KEEP_BENTOS (default 3).")
    parser.add_argument("current", help="the Bento just built (name:version); never deleted")
    parser.add_argument("--keep", type=int, default=3, help="how many Bentos of this name to keep, newest first (at least 1)")
    parser.add_argument("--bentoml", default="bentoml", help="the bentoml command")
    args = parser.parse_args(argv)
    deleted = prune(args.current, args.keep, args.bentoml)
    if deleted:
        print(f"prune_bentos: deleted {len(deleted)} older Bento(s) of {args.current.split(':', 1)[0]}, "
              f"kept the newest {max(args.keep, 1)}: {', '.join(deleted)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
