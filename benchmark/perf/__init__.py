"""Speed and memory: search, training steps and OT against peers (``bench``); sweep overhead per trial (``overhead``)."""
