"""Launch the LCIRC book-chat app (same as the ``lcirc-app`` command; all its options work here).

python demos/app.py                 # then open http://127.0.0.1:7860
python demos/app.py --port 8000 --data-dir ./lcirc-app-data
"""

from lcirc_plugins.app.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
