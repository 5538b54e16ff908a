"""The station's state machines, declared as data (states + transition tables). No I/O here."""
