"""Says whether a release build of fledge has its code laid out by code-order.txt.

Usage: python3 bench/code_order.py BINARY ORDER_FILE

Release builds place the functions listed in crates/fledge/code-order.txt side by
side at the start of the text (crates/fledge/build.rs). When the list goes stale (a
dependency change renames every function of the crates above it) or the ordering
is not applied, the code a server runs spreads over the whole text again, and the
resident code of `fledge serve` doubles: a memory figure measured on such a build
says more about the layout than about the server. This prints how many listed
names the build has and how many of those sit in the gathered block, and a warning
when either is short, with the command that fixes it.
"""

import subprocess
import sys

# Below these shares the layout is taken as lost.
MIN_FOUND = 0.9
MIN_GATHERED = 0.9


def main() -> int:
    binary, order_file = sys.argv[1], sys.argv[2]
    with open(order_file, encoding="utf-8") as f:
        listed = [line.strip() for line in f if line.strip()]
    wanted = set(listed)
    text = subprocess.run(
        ["nm", "-n", "--defined-only", binary],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Code symbols in address order: the listed ones found, and where each is.
    positions = {}
    index = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("t", "T"):
            continue
        if parts[2] in wanted and parts[2] not in positions:
            positions[parts[2]] = index
        index += 1
    found = len(positions)
    # Gathered: among the first `found` + a few hundred code symbols (the start of
    # the text holds some of the C runtime's before the list).
    bound = found + 300
    gathered = sum(1 for i in positions.values() if i < bound)
    print(
        f"code order: {found} of {len(wanted)} listed functions are in this build, "
        f"{gathered} of them gathered at the start of the text"
    )
    if found < MIN_FOUND * len(wanted) or gathered < MIN_GATHERED * max(found, 1):
        print(
            "  WARNING: the code a server runs is not gathered, so resident memory "
            "is overstated; run scripts/code-order and rebuild (a shared target "
            "directory may also hold a stale build-script result: touch "
            "crates/fledge/build.rs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
