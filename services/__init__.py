# This folder is installed as switchboard.services (package-dir in pyproject.toml). Refusing its
# own folder name means no module in it can be loaded twice, under two names.
if __name__ != "switchboard.services":
    raise ImportError(f"this folder is the package 'switchboard.services': import it by that name, "
                      f"not as {__name__!r}")
