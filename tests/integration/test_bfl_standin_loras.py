"""The BFL stand-in's klein LoRA endpoints (`-finetuned`): what they require, the LoRAs
uploaded per account, and how a wrong finetune fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.bfl_server import FakeBFL

KEY = "test-bfl-key"
OTHER_KEY = "other-account-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBFL]:
    async with FakeBFL(api_keys={KEY: 4, OTHER_KEY: 4}, latency=0.05) as server:
        yield server


async def post(
    fake: FakeBFL, endpoint: str, body: dict[str, object], key: str = KEY
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-key": key}) as http:
        return await http.post(f"/v1/{endpoint}", json=body)


async def test_a_registered_lora_on_its_base_endpoint_is_accepted_at_the_base_price(
    fake: FakeBFL,
) -> None:
    fake.register_lora("my-style_2", "klein-base-9b", api_key=KEY)
    body = {"prompt": "a fox", "finetune_id": "my-style_2", "finetune_strength": 0.8}
    answer = await post(fake, "flux-2-klein-base-9b-finetuned", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["cost"] == 1.5
    [submission] = fake.submissions
    assert submission.ignored_fields == ()  # finetune_id and finetune_strength are known here
    assert fake.tasks[answer.json()["id"]].endpoint == "flux-2-klein-base-9b-finetuned"


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"prompt": "a fox", "finetune_strength": 1.0}, "finetune_id"),
        ({"prompt": "a fox", "finetune_id": "my-style"}, "finetune_strength"),
    ],
)
async def test_finetune_id_and_strength_are_required(
    fake: FakeBFL, body: dict[str, object], missing: str
) -> None:
    fake.register_lora("my-style", "klein-4b", api_key=KEY)
    answer = await post(fake, "flux-2-klein-4b-finetuned", body)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", missing] and error["type"] == "missing"
    assert fake.tasks == {}


async def test_a_strength_that_is_not_a_number_is_refused(fake: FakeBFL) -> None:
    fake.register_lora("my-style", "klein-4b", api_key=KEY)
    body = {"prompt": "a fox", "finetune_id": "my-style", "finetune_strength": "strong"}
    answer = await post(fake, "flux-2-klein-4b-finetuned", body)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "finetune_strength"]


async def test_an_unknown_finetune_or_another_accounts_fails_at_submit_unbilled(
    fake: FakeBFL,
) -> None:
    fake.register_lora("theirs", "klein-4b", api_key=OTHER_KEY)
    credits = fake.credits
    for finetune_id in ("never-uploaded", "theirs"):
        body = {"prompt": "a fox", "finetune_id": finetune_id, "finetune_strength": 1.0}
        answer = await post(fake, "flux-2-klein-4b-finetuned", body)
        assert answer.status_code == 422
        [error] = answer.json()["detail"]
        assert error["loc"] == ["body", "finetune_id"]
        assert "not found" in error["msg"]
    assert fake.tasks == {} and fake.credits == credits


async def test_a_lora_sent_to_another_base_models_endpoint_names_the_right_one(
    fake: FakeBFL,
) -> None:
    fake.register_lora("nine", "klein-base-9b", api_key=KEY)
    body = {"prompt": "a fox", "finetune_id": "nine", "finetune_strength": 1.0}
    answer = await post(fake, "flux-2-klein-9b-finetuned", body)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert "/v1/flux-2-klein-base-9b-finetuned" in error["msg"]
    assert fake.tasks == {}


async def test_the_plain_klein_endpoint_ignores_finetune_fields(fake: FakeBFL) -> None:
    body = {"prompt": "a fox", "finetune_id": "x", "finetune_strength": 1.0}
    answer = await post(fake, "flux-2-klein-4b", body)
    assert answer.status_code == 200
    assert set(fake.submissions[0].ignored_fields) == {"finetune_id", "finetune_strength"}


def test_registering_for_an_unknown_base_is_a_test_error() -> None:
    with pytest.raises(ValueError, match="unknown LoRA base"):
        FakeBFL().register_lora("x", "pro")
