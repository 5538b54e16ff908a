#!/bin/bash
# WittyPi beforeShutdown hook (link or call it from ~/wittypi/beforeShutdown.sh): stop the supervisor cleanly
# (it flushes and stops the slave), or pulse the slave's halt line when no supervisor runs.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/wittypi-hook.sh" before-shutdown
