#!/bin/sh
# Long fuzzing run: every hypothesis test over the decoder and the live server
# handlers with the `fuzz` profile (10,000 examples per test, tests/conftest.py).
# CI runs the same tests with the quick `ci` profile.
#
#   tools/fuzz.sh                 # the default fuzz targets
#   tools/fuzz.sh -k bytes        # extra pytest arguments pass through
#
# Bounded: FUZZ_TIMEOUT seconds in all (default 5400; the rooms' targets alone took 35 minutes).
set -eu
cd "$(dirname "$0")/.."
export HYPOTHESIS_PROFILE=fuzz
exec timeout "${FUZZ_TIMEOUT:-5400}" python -m pytest -q -p no:cacheprovider -o timeout=0 \
    tests/test_fuzz_decoder.py tests/test_attacks_fuzz.py tests/test_fuzz_rooms.py \
    tests/test_room_frames.py tests/test_room_log.py tests/test_room_sealing.py \
    tests/test_protocol.py \
    -k "random or arbitrary or mutated or garbage or validate or prefix or fuzzed or raises_only or whatever" \
    --hypothesis-show-statistics "$@"
