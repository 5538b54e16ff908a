"""The master<->slave link: framing, the slave's spool, file reception, and the two link ends."""
