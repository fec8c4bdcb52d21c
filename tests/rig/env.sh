# tests/rig/env.sh - source from the repository root to run one rig or PostgreSQL
# test by hand, with what tests/run-all.sh exports to the tests:
#
#   bash tests/rig/start-rig.sh && bash tests/pg/start-pg.sh /tmp/rbe-proof-pg
#   . tests/rig/env.sh && cargo test -p proof-e2e --test binding_rig
#
# RIG_DIR and PG_DIR default to the directories start-rig.sh and start-pg.sh use.
export RIG_DIR="${RIG_DIR:-/tmp/rbe-proof-rig}" PG_DIR="${PG_DIR:-/tmp/rbe-proof-pg}"
set -a
. "$RIG_DIR/run/rig.env"
. "$PG_DIR/pg.env"
set +a
export PROOF_RIG=1 PROOF_REPO_ROOT="$PWD" PROOF_SPOKE_DIR="$PWD/examples/spoke" \
  PROOF_BAZELRC="$PWD/bazel/proof.bazelrc" PROOF_COPY_SPOKE="$PWD/tests/rig/copy-spoke.sh" \
  PROOF_RUN_BAZEL="$PWD/tests/rig/run-bazel.sh" RUN_BAZEL_MAX_IDLE=60
