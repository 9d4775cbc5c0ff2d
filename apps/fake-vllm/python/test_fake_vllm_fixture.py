"""The Python user's path: fake_vllm_fixture starts the CLI, reads its ready line, and stops it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fake_vllm_fixture import FakeVllmProcess, FakeVllmStartError, fake_vllm, start_fake_vllm  # noqa: F401


async def get_json(url: str):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status, await response.json()


def test_the_module_fixture_serves_on_a_kernel_chosen_port(fake_vllm):
    assert fake_vllm.ready["event"] == "ready"
    assert fake_vllm.url.startswith("http://127.0.0.1:") and not fake_vllm.url.endswith(":0")
    assert fake_vllm.control.startswith("ws://127.0.0.1:")
    status, body = asyncio.run(get_json(f"{fake_vllm.url}/v1/models"))
    assert status == 200 and body["data"][0]["id"] == "fake-model"


def test_start_fake_vllm_passes_flags_and_reports_every_engine(start_fake_vllm):
    server = start_fake_vllm("--engines", "3", "--model", "my-model", "--no-control")
    assert len(server.urls) == 3 and len(set(server.urls)) == 3
    assert server.control is None
    status, body = asyncio.run(get_json(f"{server.urls[2]}/v1/models"))
    assert body["data"][0]["id"] == "my-model"


def test_stop_ends_the_process():
    with FakeVllmProcess([]) as server:
        process = server.process
        assert process.poll() is None
    assert process.poll() is not None


def test_a_bad_flag_fails_start_with_the_cli_message():
    with pytest.raises(FakeVllmStartError, match=r"exited with code 2 .*`--itl-ms`"):
        FakeVllmProcess(["--itl-ms", "fast"]).start()
