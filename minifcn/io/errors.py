"""One-line error messages, shared by the file readers (npzfile, torchpickle, torchfile)."""


def one_line(text):
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split())


def described(e):
    """``zlib.error: Error -3 ...``: an exception as a message names it (module unless builtin)."""
    kind = type(e).__name__ if type(e).__module__ == "builtins" else \
        f"{type(e).__module__}.{type(e).__name__}"
    return f"{kind}: {e}"
