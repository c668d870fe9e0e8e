"""Side-by-side benchmark: switchboard vs Node socket.io vs python-socketio (``python -m bench``).

See ``bench/README.md``.
"""
