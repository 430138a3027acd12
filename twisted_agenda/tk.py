"""``python -m twisted_agenda.tk``: the agenda window (see client/tk.py)."""

from twisted_agenda.client.tk import main

if __name__ == "__main__":
    main()
