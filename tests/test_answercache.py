import asyncio
import json

from wrapresolver.answercache import AnswerCache, AnswerKey, CachedAnswer


def _cached(size: int) -> CachedAnswer:
    return CachedAnswer(tasks={"t": b"x" * size}, ref_source={}, annotations={}, pipeline="p")


def test_the_cache_is_found_only_by_its_whole_key_and_keeps_at_most_its_bytes():
    cache = AnswerCache(max_bytes=250)
    key = AnswerKey("ns", "uid", "settings", "pin-a")
    cache.put(key, _cached(100))
    assert cache.get(key) is not None
    for other in (AnswerKey("ns", "uid", "settings", "pin-b"), AnswerKey("ns2", "uid", "settings", "pin-a"),
                  AnswerKey("ns", "uid2", "settings", "pin-a"), AnswerKey("ns", "uid", "other", "pin-a")):
        assert cache.get(other) is None
    cache.put(AnswerKey("ns", "uid", "settings", "pin-b"), _cached(100))
    cache.get(key)  # used last: the other goes first
    cache.put(AnswerKey("ns", "uid", "settings", "pin-c"), _cached(100))
    assert cache.get(key) is not None and cache.get(AnswerKey("ns", "uid", "settings", "pin-b")) is None
    assert cache.size == 200
    cache.put(AnswerKey("ns", "uid", "settings", "huge"), _cached(251))
    assert len(cache) == 2 and json.dumps(cache.size) == "200"


def test_requests_asking_at_once_make_the_answer_once_and_share_a_failure():
    cache = AnswerCache()
    made = []

    async def make():
        made.append(1)
        await asyncio.sleep(0)
        return _cached(10)

    async def fail():
        made.append(1)
        await asyncio.sleep(0)
        raise ValueError("changed")

    async def main():
        key = AnswerKey("ns", "uid", "s", "pin")
        answers = await asyncio.gather(*(cache.get_or_make(key, make) for _ in range(5)))
        assert len({id(a) for a in answers}) == 1
        failures = await asyncio.gather(*(cache.get_or_make(AnswerKey("ns", "uid", "s", "bad"), fail)
                                          for _ in range(3)), return_exceptions=True)
        assert all(isinstance(f, ValueError) for f in failures)

    asyncio.run(main())
    assert len(made) == 2
    assert cache.get(AnswerKey("ns", "uid", "s", "bad")) is None
