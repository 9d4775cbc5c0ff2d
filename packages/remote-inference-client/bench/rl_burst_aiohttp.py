"""One client of bench/rl-burst.mjs: an aiohttp client written the way SkyRL's RemoteInferenceClient is
(one ClientSession over a TCPConnector(limit=50000), a per-engine asyncio.Semaphore, round robin, up to 3 retries
on connection errors), sending the same bursts as rl-burst-client.mjs (a cold one, then `steps` times: an idle gap, a burst, a burst). Written here, not copied.
Prints one JSON line with client CPU per request for each burst."""

import asyncio
import json
import sys
import time

import aiohttp

config = json.loads(sys.argv[1])
engines = config["engines"]
requests = config["requests"]
max_tokens = config["maxTokens"]
gap_s = config["gapMs"] / 1000
steps = config.get("steps", 1)


def body(index):
    return {"token_ids": [1 + (index % 1000), 2, 3, 4], "sampling_params": {"max_tokens": max_tokens, "seed": index}}


async def main():
    connector = aiohttp.TCPConnector(limit=50000)
    semaphores = [asyncio.Semaphore(512) for _ in engines]
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def send(index):
            engine = index % len(engines)
            async with semaphores[engine]:
                for attempt in range(4):
                    try:
                        async with session.post(f"{engines[engine]}/inference/v1/generate", json=body(index)) as response:
                            result = await response.json()
                            return len(result["choices"][0]["token_ids"])
                    except aiohttp.ClientConnectionError:
                        if attempt == 3:
                            raise
                        await asyncio.sleep(0.1 * 2**attempt)

        async def burst():
            cpu0 = time.process_time()
            started = time.perf_counter()
            tokens = await asyncio.gather(*(send(index) for index in range(requests)))
            cpu = time.process_time() - cpu0
            return {
                "cpuMsPerRequest": cpu * 1000 / requests,
                "wallMs": (time.perf_counter() - started) * 1000,
                "wrong": sum(1 for count in tokens if count != max_tokens),
            }

        cold = await burst()
        after_idle = []
        reused = []
        for _ in range(steps):
            await asyncio.sleep(gap_s)
            after_idle.append(await burst())
            reused.append(await burst())
    print(json.dumps({"kind": "aiohttp", "cold": cold, "afterIdle": after_idle, "reused": reused}), flush=True)


asyncio.run(main())
