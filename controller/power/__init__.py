"""Power: the master's handoff of the slave (handoff.py), the WittyPi hooks (hook.py, run as root from the WittyPi
scripts) and the WittyPi board readers (wittypi.py). Standard library only at import time: the hooks import this
package from root's minimal environment."""

from controller.power.handoff import HALT_GRACE_S, PowerHandoff, slave_stop_handler

__all__ = ["HALT_GRACE_S", "PowerHandoff", "slave_stop_handler"]
