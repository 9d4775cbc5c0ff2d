"""Every HTTP route SkyRL's RemoteInferenceClient uses, driven with the bodies it sends, against fake-vllm --preset skyrl.

The routes and bodies are read from NovaSky-AI/SkyRL (``skyrl/backends/skyrl_train/inference_servers/``):
``remote_inference_client.py`` (the client), ``vllm_server_actor.py`` (the routes SkyRL's server adds: /skyrl/v1/generate,
/skyrl/v1/load_lora_adapter, /fetch_weights) and ``generate_wire.py`` (routed experts packed
as ``{data, shape, dtype}``); /finish_session is the router's. Nothing here imports SkyRL: these are this repository's
own tests of the fake's side of that contract, with the standard library and aiohttp only (Debian's python3-aiohttp).

Data-plane calls go to one engine (SkyRL's ``proxy_url``), control-plane calls fan out to every engine (its
``server_urls``), as the client does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import zlib
from typing import Any, Dict, List, Optional

import aiohttp
import pytest

from fake_vllm_fixture import FakeVllmProcess

SESSION = {"X-Session-ID": "trajectory-7"}
JSON = {"Content-Type": "application/json"}
ITEM_SIZE = {"uint8": 1, "int16": 2, "int32": 4}


@pytest.fixture(scope="module")
def fake():
    # Two engines: the control plane's fan-out reaches more than one server, as with SkyRL's server_urls.
    with FakeVllmProcess(["--preset", "skyrl", "--engines", "2", "--itl-ms", "1", "--ttft-ms", "1"]) as server:
        yield server


@pytest.fixture(scope="module")
def model(fake) -> str:
    async def served() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{fake.url}/v1/models") as response:
                assert response.status == 200
                return (await response.json())["data"][0]["id"]

    return asyncio.run(served())


async def call(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    params: Optional[Dict[str, Any]] = None,
    headers: Optional[Dict[str, str]] = None,
) -> "tuple[int, Any, aiohttp.typedefs.LooseHeaders]":
    """One request as the client makes it; returns status, the body (JSON when JSON, else text) and headers."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=json_body, params=params, headers=headers) as response:
            raw = await response.read()
            body: Any = raw.decode("utf-8")
            if response.content_type == "application/json" and raw:
                body = json.loads(raw)
            return response.status, body, response.headers


def run(coroutine):
    return asyncio.run(coroutine)


def fan_out(urls: List[str], method: str, path: str, **kwargs: Any) -> List["tuple[int, Any, Any]"]:
    """The control plane's fan-out: the same call on every engine, concurrently."""

    async def all_engines():
        return await asyncio.gather(*(call(method, f"{url}{path}", **kwargs) for url in urls))

    return run(all_engines())


def decode_routed_experts(packed: Dict[str, Any]) -> "tuple[List[int], List[int]]":
    """Checks a packed routed-experts object as SkyRL's decoder does; returns (shape, values)."""
    assert set(packed) == {"data", "shape", "dtype"}
    shape, dtype = packed["shape"], packed["dtype"]
    assert dtype in ITEM_SIZE
    assert isinstance(shape, list) and len(shape) == 3 and all(isinstance(dim, int) and dim >= 0 for dim in shape)
    data = base64.b64decode(packed["data"], validate=True)
    size = ITEM_SIZE[dtype]
    assert len(data) == shape[0] * shape[1] * shape[2] * size
    signed = dtype != "uint8"
    values = [int.from_bytes(data[i : i + size], "little", signed=signed) for i in range(0, len(data), size)]
    # The canonical dtype is the smallest that holds the largest id (SkyRL rejects any other).
    largest = max(values, default=0)
    assert dtype == ("uint8" if largest < 2**8 else "int16" if largest < 2**15 else "int32")
    assert all(value >= 0 for value in values)
    return shape, values


def logprob_values(choice: Dict[str, Any]) -> List[float]:
    """What the client reads from a choice: ``logprobs.content[].logprob``."""
    return [entry["logprob"] for entry in choice["logprobs"]["content"]]


# ---------------------------------------------------------------- data plane: generation


def test_inference_generate_as_generate_sends_it(fake, model):
    # RemoteInferenceClient.generate -> _generate_single without routed experts.
    body = {
        "sampling_params": {"max_tokens": 6, "temperature": 1.0, "logprobs": 0, "seed": 3},
        "model": model,
        "token_ids": [11, 12, 13, 14],
        "cache_salt": "weights-v0",
    }
    status, response, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=body, headers={**JSON, **SESSION}))
    assert status == 200, response
    choice = response["choices"][0]
    assert len(choice["token_ids"]) == 6 and all(isinstance(token, int) for token in choice["token_ids"])
    assert choice["finish_reason"] == "length"
    assert len(logprob_values(choice)) == 6
    assert all(isinstance(value, float) and value <= 0 for value in logprob_values(choice))


def test_skyrl_generate_returns_tokens_logprobs_and_packed_routed_experts(fake, model):
    # RemoteInferenceClient.generate with enable_return_routed_experts=True.
    prompt = [5, 6, 7, 8, 9]
    body = {"sampling_params": {"max_tokens": 4, "logprobs": 0, "seed": 1}, "model": model, "token_ids": prompt}
    status, response, headers = run(call("POST", f"{fake.url}/skyrl/v1/generate", json_body=body, headers={**JSON, **SESSION}))
    assert status == 200, response
    assert headers["content-type"].startswith("application/json")
    assert list(response) == ["choices"]
    [choice] = response["choices"]
    assert set(choice) == {"token_ids", "finish_reason", "logprobs", "routed_experts"}
    assert len(choice["token_ids"]) == 4 and choice["finish_reason"] == "length"
    assert set(choice["logprobs"]) == {"content"}
    assert all(set(entry) == {"logprob"} for entry in choice["logprobs"]["content"])
    assert len(logprob_values(choice)) == 4
    shape, _ = decode_routed_experts(choice["routed_experts"])
    # One row per token that went through the model: the prompt and every output token but the last.
    assert shape[0] == len(prompt) + 4 - 1
    assert shape[1] >= 1 and shape[2] >= 1


def test_skyrl_generate_is_the_same_engine_as_inference_generate(fake, model):
    # Same prompt, seed and params: the same tokens, because both routes run the fake's one engine.
    sampling = {"max_tokens": 5, "temperature": 1.0, "seed": 42}
    body = {"sampling_params": sampling, "model": model, "token_ids": [100, 101, 102]}
    _, native, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=body, headers=JSON))
    _, skyrl, _ = run(call("POST", f"{fake.url}/skyrl/v1/generate", json_body=body, headers=JSON))
    assert skyrl["choices"][0]["token_ids"] == native["choices"][0]["token_ids"]
    # Without logprobs asked for, SkyRL's server sends null.
    assert skyrl["choices"][0]["logprobs"] is None


def test_skyrl_generate_defaults_max_tokens_as_sampling_params_does(fake, model):
    # SkyRL's server builds vLLM's SamplingParams(**sampling_params) itself: no max_tokens means its default, 16.
    body = {"sampling_params": {}, "model": model, "token_ids": [1, 2, 3]}
    status, response, _ = run(call("POST", f"{fake.url}/skyrl/v1/generate", json_body=body, headers=JSON))
    assert status == 200, response
    assert len(response["choices"][0]["token_ids"]) == 16


def test_skyrl_generate_without_token_ids_is_a_server_error(fake, model):
    # SkyRL's handler reads body["token_ids"]: a KeyError, unhandled, so a 500 (the client raises, no retry).
    status, response, _ = run(
        call("POST", f"{fake.url}/skyrl/v1/generate", json_body={"sampling_params": {}, "model": model}, headers=JSON)
    )
    assert status == 500
    assert "token_ids" in response["error"]["message"]


def test_skyrl_generate_goes_through_the_engine_queue(fake, model):
    # A keep-paused engine holds the request; resume lets it finish. The engine's own counters show where it is.
    async def scenario():
        url = fake.urls[1]
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/pause", params={"mode": "keep", "clear_cache": "false"}) as response:
                assert response.status == 200
            body = {"sampling_params": {"max_tokens": 3}, "model": model, "token_ids": [1, 2]}
            pending = asyncio.ensure_future(session.post(f"{url}/skyrl/v1/generate", json=body))
            try:
                for _ in range(500):
                    async with session.get(f"{url}/fake/stats") as response:
                        stats = await response.json()
                    if stats["waiting"] + stats["running"] == 1:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError(f"the request never reached the engine: {stats}")
                assert not pending.done()
            finally:
                async with session.post(f"{url}/resume") as response:
                    assert response.status == 200
            response = await pending
            assert response.status == 200
            assert len((await response.json())["choices"][0]["token_ids"]) == 3

    run(scenario())


def test_skyrl_generate_takes_injected_faults(fake, model):
    body = {"sampling_params": {"max_tokens": 2}, "model": model, "token_ids": [1, 2]}
    status, response, headers = run(
        call("POST", f"{fake.url}/skyrl/v1/generate", json_body=body, headers={**JSON, "x-fake-fault": "status-503"})
    )
    assert status == 503
    assert headers.get("retry-after") == "1"
    assert response["error"]["code"] == 503


def test_sample_with_n_and_prompt_logprobs(fake, model):
    # RemoteInferenceClient.sample: Tinker params mapped onto vLLM's, sent to /inference/v1/generate.
    prompt = [21, 22, 23, 24]
    body = {
        "sampling_params": {
            "n": 2,
            "logprobs": 0,
            "output_kind": 2,
            "prompt_logprobs": 2,
            "temperature": 0.7,
            "max_tokens": 5,
            "seed": 9,
            "top_k": 40,
            "top_p": 0.95,
            "stop": ["never-generated"],
            "stop_token_ids": [3],
        },
        "model": model,
        "token_ids": prompt,
    }
    status, response, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=body, headers={**JSON, **SESSION}))
    assert status == 200, response
    assert len(response["choices"]) == 2
    for choice in response["choices"]:
        assert choice["finish_reason"] in ("length", "stop")
        assert len(logprob_values(choice)) == len(choice["token_ids"])
    prompt_logprobs = response["prompt_logprobs"]
    assert len(prompt_logprobs) == len(prompt) and prompt_logprobs[0] is None
    for position, entries in enumerate(prompt_logprobs[1:], start=1):
        assert str(prompt[position]) in entries
        assert 2 <= len(entries) <= 3
        assert all(set(entry) >= {"logprob", "rank"} for entry in entries.values())


def test_sample_without_prompt_logprobs_sends_null(fake, model):
    body = {
        "sampling_params": {"n": 1, "logprobs": 0, "output_kind": 2, "prompt_logprobs": None, "max_tokens": 3},
        "model": model,
        "token_ids": [1, 2, 3],
    }
    status, response, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=body, headers=JSON))
    assert status == 200, response
    assert response["prompt_logprobs"] is None
    assert len(response["choices"][0]["token_ids"]) == 3


def test_chat_completion(fake, model):
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    status, response, _ = run(call("POST", f"{fake.url}/v1/chat/completions", json_body=body, headers={**JSON, **SESSION}))
    assert status == 200, response
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(response["choices"][0]["message"]["content"], str)
    assert response["usage"]["completion_tokens"] == 4


def test_render_chat_completion(fake, model):
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    status, response, _ = run(
        call("POST", f"{fake.url}/v1/chat/completions/render", json_body=body, headers={**JSON, **SESSION})
    )
    assert status == 200, response
    # What the client reads (_render_for_sample): the prompt's `token_ids`, and `features` when there are images.
    assert isinstance(response, dict)
    assert response["token_ids"] and all(isinstance(token, int) for token in response["token_ids"])
    assert response["features"] is None


# ---------------------------------------------------------------- sample() with images (the render path)


def png(width: int, height: int) -> bytes:
    """A real grayscale PNG of this size (signature, IHDR, IDAT, IEND with their CRCs), as PIL would open it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def render_for_sample(url: str, model: str, chunks: List[Dict[str, Any]], session_id: str) -> "tuple[List[int], Dict[str, Any]]":
    """What RemoteInferenceClient._render_for_sample sends and how it reads the answer, for a prompt with images.

    It renders a user message holding only the prompt's images (`image` chunks as base64 data URLs,
    `image_asset_pointer` chunks by their `location`), cuts each image's placeholder tokens out of the rendered
    `token_ids` at `features.mm_placeholders.image[i]`, splices them between the prompt's own text tokens, moves the
    offsets to match, and passes `mm_hashes` and `kwargs_data` on unchanged.
    """
    images = [chunk for chunk in chunks if chunk["type"] in ("image", "image_asset_pointer")]
    parts = []
    for chunk in images:
        if chunk["type"] == "image":
            parts.append({"type": "image_url", "image_url": {"url": f"data:image/{chunk['format']};base64,{chunk['data']}"}})
        else:
            parts.append({"type": "image_url", "image_url": {"url": chunk["location"]}})
    body = {"model": model, "messages": [{"role": "user", "content": parts}], "session_id": session_id}
    status, rendered, _ = await call(
        "POST", f"{url}/v1/chat/completions/render", json_body=body, headers={**JSON, "X-Session-ID": session_id}
    )
    assert status == 200, rendered
    features = rendered["features"]
    slices = [rendered["token_ids"][p["offset"] : p["offset"] + p["length"]] for p in features["mm_placeholders"]["image"]]
    assert len(slices) == len(images)
    token_ids: List[int] = []
    placeholders: List[Dict[str, int]] = []
    for chunk in chunks:
        if chunk["type"] == "encoded_text":
            token_ids.extend(chunk["tokens"])
        else:
            piece = slices[len(placeholders)]
            placeholders.append({"offset": len(token_ids), "length": len(piece)})
            token_ids.extend(piece)
    return token_ids, {
        "mm_hashes": features["mm_hashes"],
        "mm_placeholders": {"image": placeholders},
        "kwargs_data": features["kwargs_data"],
    }


def test_sample_with_images_renders_splices_and_generates(fake, model):
    # RemoteInferenceClient.sample with a Tinker prompt of text, an inline image and an image by URL.
    image = png(56, 84)  # 2 x 3 patches of 28 pixels: 6 placeholder tokens
    chunks = [
        {"type": "encoded_text", "tokens": [7, 8, 9]},
        {"type": "image", "data": base64.b64encode(image).decode("ascii"), "format": "png"},
        {"type": "encoded_text", "tokens": [10, 11]},
        {"type": "image_asset_pointer", "location": "https://example.com/cat.png", "format": "png"},
        {"type": "encoded_text", "tokens": [12]},
    ]
    token_ids, features = run(render_for_sample(fake.url, model, chunks, "trajectory-img"))
    placeholders = features["mm_placeholders"]["image"]
    assert placeholders[0] == {"offset": 3, "length": 6}
    # The URL is not fetched: the fake counts it as a 224 x 224 image (64 tokens) and hashes the URL string.
    assert placeholders[1] == {"offset": 11, "length": 64}
    assert features["mm_hashes"] == {
        "image": [hashlib.sha256(image).hexdigest(), hashlib.sha256(b"https://example.com/cat.png").hexdigest()]
    }
    assert len(features["kwargs_data"]["image"]) == 2 and all(isinstance(item, str) for item in features["kwargs_data"]["image"])
    assert len(token_ids) == 3 + 6 + 2 + 64 + 1
    # The generate payload sample() sends, with the features.
    body = {
        "sampling_params": {"n": 2, "logprobs": 0, "output_kind": 2, "prompt_logprobs": 1, "max_tokens": 4, "seed": 4},
        "model": model,
        "token_ids": token_ids,
        "features": features,
    }
    headers = {**JSON, "X-Session-ID": "trajectory-img"}
    status, response, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=body, headers=headers))
    assert status == 200, response
    assert len(response["choices"]) == 2
    for choice in response["choices"]:
        assert len(choice["token_ids"]) == 4 and len(logprob_values(choice)) == 4
    # convert_vllm_prompt_logprobs walks prompt_logprobs along the spliced token_ids.
    assert len(response["prompt_logprobs"]) == len(token_ids) and response["prompt_logprobs"][0] is None
    # Placeholder ranges that do not cover the image tokens are refused, as a 400 with vLLM's error body.
    shifted = {**features, "mm_placeholders": {"image": [{**placeholders[0], "offset": 0}, placeholders[1]]}}
    status, response, _ = run(
        call("POST", f"{fake.url}/inference/v1/generate", json_body={**body, "features": shifted}, headers=headers)
    )
    assert status == 400, response
    assert set(response["error"]) == {"message", "type", "param", "code"} and response["error"]["code"] == 400


def test_sample_with_bytes_that_are_no_image_is_a_400(fake, model):
    # vLLM opens the bytes with PIL: anything that is not an image fails the render, and so the sample.
    chunks = [{"type": "image", "data": base64.b64encode(b"hello").decode("ascii"), "format": "png"}]
    body = {"model": model, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{chunks[0]['data']}"}}
    ]}]}
    status, response, _ = run(call("POST", f"{fake.url}/v1/chat/completions/render", json_body=body, headers=JSON))
    assert status == 400
    assert response["error"]["message"].startswith("Failed to load image: cannot identify image file")


def test_completion(fake, model):
    body = {"model": model, "prompt": "once upon", "max_tokens": 3}
    status, response, _ = run(call("POST", f"{fake.url}/v1/completions", json_body=body, headers={**JSON, **SESSION}))
    assert status == 200, response
    assert response["object"] == "text_completion"
    assert response["usage"]["completion_tokens"] == 3


def test_tokenize_then_detokenize(fake, model):
    status, tokenized, _ = run(
        call("POST", f"{fake.url}/tokenize", json_body={"model": model, "prompt": "hi there", "add_special_tokens": True})
    )
    assert status == 200, tokenized
    assert tokenized["tokens"] and tokenized["count"] == len(tokenized["tokens"])
    status, detokenized, _ = run(
        call("POST", f"{fake.url}/detokenize", json_body={"model": model, "tokens": tokenized["tokens"]})
    )
    assert status == 200, detokenized
    assert detokenized["prompt"] == "hi there"


def test_finish_session_is_a_post_with_the_id_in_the_query(fake, model):
    # The router's endpoint; the client sends no body and only checks the status.
    status, response, _ = run(call("POST", f"{fake.url}/finish_session", params={"session_id": "trajectory-7"}))
    assert status == 200, response
    # An id the server never saw is ignored, not an error.
    status, _, _ = run(call("POST", f"{fake.url}/finish_session", params={"session_id": "never-seen"}))
    assert status == 200
    status, _, _ = run(call("POST", f"{fake.url}/finish_session"))
    assert 400 <= status < 500


# ---------------------------------------------------------------- control plane: fan-out to every engine


def test_pause_modes_and_resume(fake):
    for mode in ("keep", "abort", "wait"):
        for status, body, _ in fan_out(fake.urls, "POST", "/pause", params={"mode": mode, "clear_cache": "false"}):
            assert status == 200, body
            assert body["status"] == "paused"
        for status, body, _ in fan_out(fake.urls, "GET", "/is_paused"):
            assert status == 200 and body["is_paused"] is True
        for status, body, _ in fan_out(fake.urls, "POST", "/resume"):
            assert status == 200, body
        for status, body, _ in fan_out(fake.urls, "GET", "/is_paused"):
            assert body["is_paused"] is False


def test_sleep_and_wake_up_with_tags(fake):
    for status, body, _ in fan_out(fake.urls, "POST", "/sleep", params={"level": "2"}):
        assert status == 200, body
    for status, body, _ in fan_out(fake.urls, "GET", "/is_sleeping"):
        assert body["is_sleeping"] is True
    # The client sends tags as a repeated query parameter.
    for status, body, _ in fan_out(fake.urls, "POST", "/wake_up", params=[("tags", "weights")]):
        assert status == 200, body
    for status, body, _ in fan_out(fake.urls, "POST", "/wake_up", params=[("tags", "kv_cache")]):
        assert status == 200, body
    for status, body, _ in fan_out(fake.urls, "GET", "/is_sleeping"):
        assert body["is_sleeping"] is False
    for status, body, _ in fan_out(fake.urls, "POST", "/sleep", params=[("level", "1"), ("tags", "weights")]):
        assert status == 200, body
    for status, body, _ in fan_out(fake.urls, "POST", "/wake_up"):
        assert status == 200, body


@pytest.mark.parametrize(
    "rpc",
    [
        {"method": "skyrl_sleep_for_weight_sync", "kwargs": {"offload_kv": True}},
        {"method": "skyrl_wake_for_weight_sync", "kwargs": {"tags": ["weights"]}},
        {"method": "skyrl_start_weight_update", "kwargs": {"is_checkpoint_format": True}},
        {
            "method": "update_weights_ipc",
            "kwargs": {"update_info": {"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2, 2]], "packed": True}},
        },
        {
            "method": "update_weights_nccl",
            "kwargs": {"update_info": {"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2, 2]], "packed": True}},
        },
        {"method": "skyrl_finish_weight_update"},
    ],
    ids=lambda rpc: rpc["method"],
)
def test_collective_rpc_methods_the_client_calls(fake, rpc):
    for status, body, headers in fan_out(fake.urls, "POST", "/collective_rpc", json_body=rpc):
        assert status == 200, body
        assert headers["content-type"].startswith("application/json")
        assert isinstance(body, dict)


def test_reset_prefix_cache_with_the_body_skyrl_sends(fake):
    # SkyRL's server registers its own /reset_prefix_cache after vLLM's dev-mode one; Starlette serves the first
    # match, so vLLM's answers: 200, the JSON body ignored.
    for reset_running in (False, True):
        for status, body, _ in fan_out(
            fake.urls, "POST", "/reset_prefix_cache", json_body={"reset_running_requests": reset_running}
        ):
            assert status == 200, body


def test_init_weight_transfer_engine_with_each_init_info(fake):
    broadcast = {"master_address": "10.0.0.1", "master_port": 29500, "rank_offset": 1, "world_size": 3}
    for init_info in (broadcast, {}):
        for status, body, _ in fan_out(fake.urls, "POST", "/init_weight_transfer_engine", json_body={"init_info": init_info}):
            assert status == 200, body


def test_update_weights(fake):
    update_info = {"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2, 2]], "packed": True}
    for status, body, _ in fan_out(fake.urls, "POST", "/update_weights", json_body={"update_info": update_info}):
        assert status == 200, body


def test_fetch_weights(fake):
    for body in ({"target_version": 3}, {"target_version": 4, "sync_dir": "/tmp/sync", "uri": "s3://bucket/step-4"}):
        for status, response, _ in fan_out(fake.urls, "POST", "/fetch_weights", json_body=body):
            assert status == 200, response
            assert response["status"] == "ok" and "result" in response
    status, response, _ = run(call("POST", f"{fake.url}/fetch_weights", json_body={"sync_dir": "/tmp/sync"}))
    assert status == 400
    assert "target_version" in response["error"]["message"]


def test_load_lora_adapter_then_generate_with_it_then_unload(fake, model):
    body = {"lora_name": "skyrl-lora", "lora_path": "/tmp/skyrl-lora/step-1"}
    first = fan_out(fake.urls, "POST", "/skyrl/v1/load_lora_adapter", json_body=body)
    for status, response, _ in first:
        assert status == 200, response
        assert response["status"] == "ok" and response["lora_name"] == "skyrl-lora"
        assert isinstance(response["lora_int_id"], int)
    # Loading the same name again reloads it in place, under the same id.
    again = fan_out(fake.urls, "POST", "/skyrl/v1/load_lora_adapter", json_body={**body, "lora_path": "/tmp/skyrl-lora/step-2"})
    assert [response["lora_int_id"] for _, response, _ in again] == [response["lora_int_id"] for _, response, _ in first]
    # The adapter is now a model the data plane accepts.
    generate = {"sampling_params": {"max_tokens": 2}, "model": "skyrl-lora", "token_ids": [1, 2, 3]}
    status, response, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=generate, headers=JSON))
    assert status == 200, response
    chat = {"model": "skyrl-lora", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, response, _ = run(call("POST", f"{fake.url}/v1/chat/completions", json_body=chat, headers=JSON))
    assert status == 200, response
    # Unload through vLLM's own route: plain text on success, then the name is unknown again.
    for status, response, _ in fan_out(fake.urls, "POST", "/v1/unload_lora_adapter", json_body={"lora_name": "skyrl-lora"}):
        assert status == 200, response
    status, response, _ = run(call("POST", f"{fake.url}/inference/v1/generate", json_body=generate, headers=JSON))
    assert status == 404, response
    status, response, _ = run(call("POST", f"{fake.url}/v1/unload_lora_adapter", json_body={"lora_name": "skyrl-lora"}))
    assert status == 404
    assert "skyrl-lora" in response["error"]["message"]


def test_load_lora_adapter_needs_a_name_and_a_path(fake):
    status, response, _ = run(call("POST", f"{fake.url}/skyrl/v1/load_lora_adapter", json_body={"lora_name": "x"}))
    assert status == 400
    assert response["error"]["message"] == "Both 'lora_name' and 'lora_path' must be provided."


def test_get_world_size_is_a_get_with_a_json_body(fake):
    # _call_all_servers("/get_world_size", {}, method="GET") sends `{}` as the body of a GET.
    for status, body, _ in fan_out(fake.urls, "GET", "/get_world_size", json_body={}):
        assert status == 200, body
        assert isinstance(body["world_size"], int) and body["world_size"] >= 1
