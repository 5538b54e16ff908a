#!/bin/bash
# WittyPi afterStartup hook (link or call it from ~/wittypi/afterStartup.sh): wake the slave unless the
# supervisor is already running (it then does it itself).
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/wittypi-hook.sh" after-startup
