"""Both emulators and the real bot wired as in production, for the playground, the tests
and the benchmarks (``stack.py`` in one process, ``processes.py`` as separate processes).
Never imported by the bot's runtime path."""
