"""securechat's benchmark: ``python -m securechat.bench`` (see docs/performance.md).

Modules: :mod:`.loadgen` (protocol clients in worker processes: :mod:`.loadclient`,
:mod:`.worker`, :mod:`.redisref`),
:mod:`.runner` (forks them, times the window, reads the server from /proc),
:mod:`.servers` (servers under test as subprocesses), :mod:`.naive_relay`
(the baseline), :mod:`.crypto_bench`, :mod:`.sections`, :mod:`.report`.
"""
