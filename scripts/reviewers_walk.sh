#!/usr/bin/env bash
# Issue 30's walk: two real app windows (Anna, Ben) under Xvfb + openbox on one PostgreSQL
# project. Ben opens the image Anna is reviewing (question, then read-only), Anna accepts
# grains with Tab / A, and Ben's window shows them (LISTEN/NOTIFY); Ben's Tab then reaches
# Anna's next image (question again). Screenshots of the whole screen go to OUT.
#
#   eval "$(scripts/pg_throwaway.sh start)"
#   scripts/reviewers_walk.sh "$POLLENSTUDIO_TEST_PG" /tmp/walk-shots
#
# Needs Xvfb, openbox, xdotool and ImageMagick's import (apt-get install xvfb openbox xdotool imagemagick).
set -euo pipefail
BASE="${1:?give the server URL, e.g. postgresql://postgres@127.0.0.1:55432/postgres}"
OUT="${2:-/tmp/walk-shots}"
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
WORK=$(mktemp -d /tmp/reviewers-walk.XXXXXX)
NAME="walk$(date +%s)"
URL="$BASE$([[ "$BASE" == *\?* ]] && echo '&' || echo '?')project=$NAME"
python - "$WORK/proj" "$URL" <<'PY'
import sys
from pollenstudio.gui.sample_project import make_review_project
from pollenstudio.project.server_copy import push
make_review_project(sys.argv[1], n_images=3, seed=3, width=900, height=700, n_grains=(5, 6)).close()
push(sys.argv[1], sys.argv[2])
PY
mkdir -p "$OUT" "$WORK/homeA" "$WORK/homeB"
Xvfb :77 -screen 0 2820x960x24 >"$WORK/xvfb.log" 2>&1 & XPID=$!
sleep 1
export DISPLAY=:77
openbox >"$WORK/openbox.log" 2>&1 & OPID=$!
HOME="$WORK/homeA" POLLENSTUDIO_USER=Anna python -m pollenstudio gui "$URL" >"$WORK/anna.log" 2>&1 & APID=$!
cleanup() { kill $APID ${BPID:-} 2>/dev/null || true; sleep 1; kill $OPID $XPID 2>/dev/null || true; }
trap cleanup EXIT
AW=$(xdotool search --sync --onlyvisible --name "slide.*PollenStudio" | head -1)
sleep 2; xdotool windowmove --sync "$AW" 1410 0
HOME="$WORK/homeB" POLLENSTUDIO_USER=Ben python -m pollenstudio gui "$URL" >"$WORK/ben.log" 2>&1 & BPID=$!
QW=$(xdotool search --sync --onlyvisible --name "Image in review" | head -1)
BW=$(xdotool search --onlyvisible --name "slide.*PollenStudio" | grep -v "^$AW$" | head -1)
xdotool windowmove --sync "$BW" 0 0
sleep 1; import -window root "$OUT/walk-1-question.png"
xdotool windowactivate --sync "$QW"; sleep 0.3; xdotool key Return   # Open read-only (the default)
sleep 2; import -window root "$OUT/walk-2-read-only.png"
xdotool windowactivate --sync "$AW"; sleep 0.5
for i in 1 2; do xdotool key Tab; sleep 0.4; xdotool key a; sleep 0.8; done
sleep 2; import -window root "$OUT/walk-3-accept-appears.png"
xdotool windowactivate --sync "$BW"; sleep 0.5
xdotool key Tab; sleep 0.4; xdotool key a; sleep 1.5
import -window root "$OUT/walk-4-question-again.png"
echo "screenshots in $OUT; project $URL (drop with: DROP SCHEMA $NAME CASCADE)"
