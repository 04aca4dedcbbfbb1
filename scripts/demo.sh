#!/usr/bin/env bash
# The main job, watched: installs what is missing, then boots a throwaway VM
# and walks through ferrolvm step by step, with what lvm2 sees after each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo run --release -q -p vm-tests -- demo
