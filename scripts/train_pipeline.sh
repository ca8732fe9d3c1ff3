#!/usr/bin/env bash
# The training guide's pipeline against a running GapFill API (`gapfill serve`):
# load the corpus, train the map, train Vec2Text, evaluate, save both models.
#
#   GAPFILL_URL  the server (default http://localhost:8000)
#   MAP_CONFIG   JSON body of train-parametric-umap (default {}: the documented defaults)
#   V2T_CONFIG   JSON body of train-vec2text (default {"epochs": 3, "batch_size": 8})
#   CSV          a CSV corpus to upload (default: the built-in corpus); TEXT_COLUMN its text column
#   BUILTIN_N    documents of the built-in corpus (default: the server's GAPFILL_BUILTIN_N, else all)
#   MAX_TIME     seconds one call may take (default: a day)
#
# Training calls block until the job ends, so curl may wait for hours; any 4xx/5xx answer
# stops the script with the server's JSON error on stderr.
set -euo pipefail

URL="${GAPFILL_URL:-http://localhost:8000}/api/advanced-gap-filling"
DEFAULT_MAP='{}'
DEFAULT_V2T='{"epochs": 3, "batch_size": 8}'
MAP_CONFIG="${MAP_CONFIG:-$DEFAULT_MAP}"
V2T_CONFIG="${V2T_CONFIG:-$DEFAULT_V2T}"
MAX_TIME="${MAX_TIME:-86400}"

call() {  # call METHOD PATH [curl options...]: print the answer; fail on an HTTP error
    local method="$1" path="$2"
    shift 2
    curl -sS --fail-with-body --max-time "$MAX_TIME" -X "$method" "$URL/$path" "$@"
    echo
}

json() {  # json METHOD PATH BODY
    call "$1" "$2" -H 'Content-Type: application/json' --data "$3"
}

echo "== 1/6 initialize" >&2
form=()
if [[ -n "${CSV:-}" ]]; then
    form+=(-F "file=@${CSV}")
    if [[ -n "${TEXT_COLUMN:-}" ]]; then
        form+=(-F "text_column=${TEXT_COLUMN}")
    fi
fi
call POST "initialize${BUILTIN_N:+?n=${BUILTIN_N}}" "${form[@]}"

echo "== 2/6 train-parametric-umap ${MAP_CONFIG}" >&2
json POST train-parametric-umap "$MAP_CONFIG"

echo "== 3/6 train-vec2text ${V2T_CONFIG}" >&2
json POST train-vec2text "$V2T_CONFIG"

echo "== 4/6 evaluate-quality" >&2
call GET evaluate-quality

echo "== 5/6 save-parametric-umap" >&2
call POST save-parametric-umap

echo "== 6/6 save-vec2text" >&2
call POST save-vec2text
