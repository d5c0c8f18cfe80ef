#!/usr/bin/env bash
# Build the broad training data and retrain DeepCristae on it (configs/deepcristae_broad.yaml), niced, into runs/.
# Re-running resumes the training where its wall-time budget stopped it. Usage: scripts/train_deepcristae_broad.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-50}"
[ -d runs/sim_broad ] || nice -n 10 cristae-zoo simulate runs/sim_broad --config configs/simulation_broad.yaml
[ -d runs/data_broad ] || nice -n 10 cristae-zoo prepare runs/sim_broad/hr -o runs/data_broad
if [ -f runs/deepcristae_broad/checkpoints/state.json ]; then
  nice -n 10 cristae-zoo train configs/deepcristae_broad.yaml --resume --max-minutes "$minutes"
else
  nice -n 10 cristae-zoo train configs/deepcristae_broad.yaml --max-minutes "$minutes"
fi
