"""The whole server on DynamoDB Local: phone frames are acked and stored, a watch gets pushes."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from server.settings import Settings
from tests.conftest import auth, recv_op, send, start_server
from tests.stores import DynamoDBStoreFactory

pytestmark = pytest.mark.dynamodb


async def test_phone_frames_land_in_dynamodb_and_a_watch_receives_the_delta(
    settings: Settings, dynamodb_store_factory: DynamoDBStoreFactory
) -> None:
    async with dynamodb_store_factory() as store:
        node = replace(settings, store="dynamodb", table_prefix=store.table_prefix)
        async with start_server(node, store=store) as live:
            phone = await live.connect("alice", "phone")
            watch = await live.connect("alice", "watch")
            try:
                start = int(time.time() * 1000) - 60_000
                for seq in range(3):
                    frames = [
                        {"ts": start + 1000 * (seq * 40 + i), "hr": 70 + i % 5, "device": "w1"}
                        for i in range(40)
                    ]
                    await send(phone, {"op": "frames", "seq": seq, "frames": frames})
                    ack = await recv_op(phone, "ack")
                    assert (ack["seq"], ack["accepted"], ack["rejected"]) == (seq, 40, [])
                async with live.http() as http:
                    answer = await http.post(
                        "/v1/demo/users/alice/state",
                        json={"state": "stressed", "mood": "anxious"},
                        headers=auth("alice", "service"),
                    )
                assert answer.status_code == 200
                delta = await recv_op(watch, "delta")
                assert delta["changes"]["state"] == "stressed"
                assert delta["version"] == 1
            finally:
                await phone.close()
                await watch.close()

            await store.open()  # the server closed it on shutdown; open() is idempotent
            client = store.client
            frames_table = f"{store.table_prefix}frames"
            stored = await client.query(
                TableName=frames_table,
                KeyConditionExpression="user_id = :u",
                ExpressionAttributeValues={":u": {"S": "alice"}},
            )
            # 120 frames at 1 Hz are packed one item per minute: two or three items.
            assert sum(int(item["n"]["N"]) for item in stored["Items"]) == 120
            assert len(stored["Items"]) <= 3
            item = await client.get_item(
                TableName=f"{store.table_prefix}user_state", Key={"user_id": {"S": "alice"}}
            )
            assert item["Item"]["version"]["N"] == "1"
            assert item["Item"]["state_hash"]["S"] == delta["state_hash"]
