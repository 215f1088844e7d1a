"""PLC integration: the EQC-ASCII/1 telegram protocol over a serial line.

Modules: ``telegram`` (pure codec), ``link`` (port + threads + reconnect), ``simulator`` (the PLC
side), ``pty`` (pty pairs for the demo/tests), ``cli`` (``edgeqc plc-sim``). Protocol reference:
``docs/plc-protocol.md``.
"""
