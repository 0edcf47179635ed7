"""securechat.bench.hotpath, the relay's hot path over fake transports, still runs: it was left logging in
over plaintext to a server that had become TLS by default, and counting acks one loop iteration after each
read when some now come later (a message that found its recipient's window full returns from the store)."""

from __future__ import annotations

from securechat.bench import hotpath


async def test_the_hot_path_delivers_every_message_and_times_the_server() -> None:
    result = await hotpath.run(pairs=3, window=8, messages=240, check=True, profile=None)
    assert result["delivered"] == 240
    assert result["server_us_per_msg"] > 0
