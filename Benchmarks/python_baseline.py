#!/usr/bin/env python3
"""The original service's local-fallback design, re-created for a baseline.

A dict of entries (value + expiry) behind a cache class that counts hits and misses, as
`redis_cache.py` did when Redis was absent. Same workload as `ibge-cache bench`: write then
read one município value over 10,000 keys, single-threaded. Prints one JSON line.

    python3 Benchmarks/python_baseline.py [--rounds N]
"""
import argparse
import json
import threading
import time


class LocalCache:
    """`bare`: the dict alone. Otherwise as a Flask service needs it: the `ibge:` key prefix,
    a lock (requests run on several threads) and the request counter its metrics expose."""

    def __init__(self, bare=False):
        self._cache = {}
        self._lock = threading.Lock()
        self._bare = bare
        self.prefix = "ibge:"
        self.metrics = {"hits": 0, "misses": 0, "sets": 0, "total_requests": 0}

    def _key(self, key):
        return f"{self.prefix}{key}"

    def set(self, key, value, ttl=3600):
        if self._bare:
            self._cache[key] = {"value": value, "expires_at": time.time() + ttl}
            return True
        with self._lock:
            self._cache[self._key(key)] = {"value": value, "expires_at": time.time() + ttl}
            self.metrics["sets"] += 1
        return True

    def get(self, key):
        if self._bare:
            entry = self._cache.get(key)
            if entry is None or entry["expires_at"] < time.time():
                return None
            return entry["value"]
        with self._lock:
            self.metrics["total_requests"] += 1
            entry = self._cache.get(self._key(key))
            if entry is None:
                self.metrics["misses"] += 1
                return None
            if entry["expires_at"] < time.time():
                del self._cache[self._key(key)]
                self.metrics["misses"] += 1
                return None
            self.metrics["hits"] += 1
            return entry["value"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--bare", action="store_true", help="the dict alone: no prefix, lock or counters")
    args = parser.parse_args()
    value = {
        "id": 4208203, "nome": "Itajaí",
        "microrregiao": {"id": 42013, "nome": "Itajaí", "mesorregiao": {"id": 4204, "nome": "Vale do Itajaí"}},
        "regiao-imediata": {"id": 420020, "nome": "Itajaí", "regiao-intermediaria": {"id": 4207, "nome": "Blumenau"}},
    }
    keys = [f"bench:v1:localidades/municipios/{1_000_000 + i}" for i in range(args.keys)]
    cache = LocalCache(bare=args.bare)
    operations = args.keys * args.rounds
    start = time.perf_counter()
    for _ in range(args.rounds):
        for key in keys:
            cache.set(key, value)
    writes = operations / (time.perf_counter() - start)
    start = time.perf_counter()
    found = 0
    for _ in range(args.rounds):
        for key in keys:
            if cache.get(key) is not None:
                found += 1
    reads = operations / (time.perf_counter() - start)
    print(json.dumps({"write_ops_per_s": int(writes), "read_ops_per_s": int(reads), "hit_rate_percent": 100.0 * found / operations}))


if __name__ == "__main__":
    main()
