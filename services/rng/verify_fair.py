"""Offline verifier of a provably-fair round, for players: needs only the revealed values.

    python -m services.rng.verify_fair --server-seed HEX --commitment HEX \\
        --client-seed TEXT --nonce N --specs JSON [--expect JSON] \\
        [--sampling sampling/rejection-v1]

``--specs`` is the round's draws in order, flattened, each ``{"integers": {"low", "high",
"count"}}`` or ``{"shuffle": {"size"}}``; ``--expect`` the values shown for them (a list of
lists). It checks SHA-256(server seed) against the commitment, recomputes the values from
HMAC-SHA256(server seed, "client_seed:nonce:block") with the published sampling algorithm,
prints them, and exits 0 when everything matches, 1 when something does not, 2 on bad input.
Standard library plus this package's pure modules only: no network, no database.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
from collections.abc import Sequence

from services.rng import draws, fair
from services.rng.sampling import SAMPLING_VERSION


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.rng.verify_fair")
    parser.add_argument("--server-seed", required=True, help="revealed server seed, hex")
    parser.add_argument("--commitment", required=True, help="SHA-256 shown before play, hex")
    parser.add_argument("--client-seed", required=True)
    parser.add_argument("--nonce", type=int, required=True)
    parser.add_argument("--specs", required=True, help="JSON list of draw specs, in order")
    parser.add_argument("--expect", help="JSON list of the values shown, per spec")
    parser.add_argument("--sampling", default=SAMPLING_VERSION)
    args = parser.parse_args(argv)
    try:
        server_seed = bytes.fromhex(args.server_seed)
        specs = [draws.spec_from_json(s) for s in json.loads(args.specs)]
        expect = None if args.expect is None else json.loads(args.expect)
        stream = fair.FairStream(server_seed, args.client_seed, args.nonce)
        values = draws.compute(stream, draws.sampler(args.sampling), specs)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    digest = fair.commitment(server_seed)
    if hmac.compare_digest(digest, args.commitment.lower()):
        print(f"commitment OK: sha256(server_seed) = {digest}")
    else:
        print(f"commitment MISMATCH: sha256(server_seed) = {digest}, shown {args.commitment}")
        ok = False
    print("values: " + json.dumps(values))
    if expect is not None:
        if expect == values:
            print("outcome OK: the values shown are the values the seeds produce")
        else:
            print("outcome MISMATCH: the values shown are not the values the seeds produce")
            ok = False
    print("VERIFIED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
