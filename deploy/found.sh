#!/bin/sh
# Found the compose federation (run once by the `init` service of deploy/compose.yaml).
#
# The ceremony three real members would run, on one host: each member initialises its home
# (member key, API token, TLS key and self-signed certificate) and publishes its card; one
# drafts the genesis from the cards; every founder signs it; every home joins it. Finally every
# node is seeded with the other two, pinned by their certificates' key fingerprints (the cards'
# "seed"), so no connection is ever made to an unpinned https peer. With $REPLICAS set, the
# first member's node also issues one replica token per name in it, for the match replicas
# that follow that node: $REPLICA_DIR/<name>.token, and $REPLICA_DIR/node.url (its pinned URL).
#
# Idempotent: once $FOUNDING/federation.json exists it does nothing. Start over with
# `docker compose down --volumes`.
set -eu

HOMES=${HOMES:-/homes}            # one volume per member: $HOMES/<member>
FOUNDING=${FOUNDING:-/founding}   # cards and the genesis (public documents)
MEMBERS=${MEMBERS:-alpha beta gamma}
PORT=${PORT:-7400}
OWNER=${OWNER:-10001:10001}       # the image's non-root user; "" leaves ownership alone
REPLICAS=${REPLICAS:-}            # replica token names, issued by the first member's node
REPLICA_DIR=${REPLICA_DIR:-/replica}

if [ -f "$FOUNDING/federation.json" ]; then
    echo "federation already founded: $FOUNDING/federation.json"
    exit 0
fi
mkdir -p "$FOUNDING"
cards=""
for m in $MEMBERS; do
    hashmesh init --home "$HOMES/$m" --name "$m" --listen "0.0.0.0:$PORT" \
        --url "https://$m:$PORT/" --tls
    hashmesh card --home "$HOMES/$m" > "$FOUNDING/$m.card.json"
    cards="$cards $FOUNDING/$m.card.json"
done
# shellcheck disable=SC2086  # $cards is a list of paths without spaces
hashmesh federation create --name "compose federation" --threshold 2 \
    -o "$FOUNDING/genesis.draft.json" $cards
for m in $MEMBERS; do
    hashmesh federation sign --home "$HOMES/$m" "$FOUNDING/genesis.draft.json"
done
for m in $MEMBERS; do
    hashmesh federation join --home "$HOMES/$m" "$FOUNDING/genesis.draft.json"
done
first=$(echo $MEMBERS | cut -d' ' -f1)
if [ -n "$REPLICAS" ]; then
    mkdir -p "$REPLICA_DIR"
    for r in $REPLICAS; do
        (umask 077 && hashmesh tokens issue --home "$HOMES/$first" --replica "$r" --json \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])' \
            > "$REPLICA_DIR/$r.token")
    done
    python3 - "$FOUNDING/$first.card.json" "$first" "$PORT" > "$REPLICA_DIR/node.url" <<'PY'
import json, sys

card = json.load(open(sys.argv[1]))
print(f"https://{sys.argv[2]}:{sys.argv[3]}/#spki={card['tls']}")
PY
    if [ -n "$OWNER" ]; then chown -R "$OWNER" "$REPLICA_DIR"; fi
fi
for m in $MEMBERS; do
    # peers = the other members' pinned seed URLs, from their cards
    python3 - "$HOMES/$m/config.toml" "$m" "$FOUNDING" $MEMBERS <<'PY'
import json, pathlib, sys

config, me, founding, members = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
cards = [json.loads(pathlib.Path(f"{founding}/{o}.card.json").read_text()) for o in members if o != me]
seeds = ", ".join(json.dumps(card["seed"]) for card in cards)
text = config.read_text()
assert text.count("\npeers = []\n") == 1, "unexpected config.toml layout"
config.write_text(text.replace("\npeers = []\n", f"\npeers = [{seeds}]\n"))
PY
    if [ -n "$OWNER" ]; then chown -R "$OWNER" "$HOMES/$m"; fi
done
mv "$FOUNDING/genesis.draft.json" "$FOUNDING/federation.json"
echo "founded: $(hashmesh federation show --home "$HOMES/$first" | head -1)"
