"""Data: MQAR (synthetic recall) and WikiText (real text)."""
