"""An independent GraphQL client for Keel's test suite: PyPI `gql` with its HTTPX transport
and its websockets transport (subprotocol `graphql-transport-ws`), run by
`crates/keel/tests/gql_client.rs`.

Runs a query and a mutation on both schemas, then a subscription on each (admin
`orderEvents`, storefront `orderStatus`), prints `{"kind": "ready"}` once both are live, and
prints every result as one JSON line until the admin subscription has two events and the
storefront's one. Arguments: base URL, staff token, publishable key, cart secret, order id.
"""

import asyncio
import json
import sys

from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

BASE, TOKEN, PK, SECRET, ORDER = sys.argv[1:6]
WS = BASE.replace("http://", "ws://", 1)


def say(kind, value=None):
    print(json.dumps({"kind": kind, "value": value}), flush=True)


class Watched(WebsocketsTransport):
    """Knows when a `subscribe` message went out."""

    def __init__(self, **kwargs):
        super().__init__(subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL], **kwargs)
        self.subscribed = asyncio.Event()

    async def _send(self, message):
        await super()._send(message)
        if json.loads(message).get("type") == "subscribe":
            self.subscribed.set()


async def http_calls():
    admin = HTTPXAsyncTransport(url=f"{BASE}/v1/admin/graphql", headers={"authorization": f"Bearer {TOKEN}"})
    async with Client(transport=admin) as s:
        say("admin_query", await s.execute(GraphQLRequest(
            "{ products(first: 5) { edges { node { id title variants { sku prices { amount currency } } } } } }")))
        say("admin_mutation", await s.execute(GraphQLRequest(
            "mutation($i: JSON!) { createProduct(input: $i) { title status variants { prices { amount currency } } } }",
            variable_values={"i": {"title": "Cap", "handle": "cap", "status": "active",
                                   "variants": [{"sku": "CAP", "prices": [{"amount": 1250, "currency": "USD"}]}]}})))
    store = HTTPXAsyncTransport(url=f"{BASE}/v1/store/graphql", headers={"keel-publishable-key": PK})
    async with Client(transport=store) as s:
        say("store_query", await s.execute(GraphQLRequest(
            '{ products(currency: "USD", first: 5) { edges { node { handle variants { price { amount currency } } } } } }')))
        say("store_mutation", await s.execute(GraphQLRequest(
            'mutation { createCart(currency: "USD") { currency status total { amount currency } } }')))


async def subscriptions():
    admin = Watched(url=f"{WS}/v1/admin/graphql", init_payload={"authorization": f"Bearer {TOKEN}"})
    store = Watched(url=f"{WS}/v1/store/graphql", init_payload={"keel-publishable-key": PK, "keel-cart-secret": SECRET})
    async with Client(transport=admin) as a, Client(transport=store) as st:
        async def admin_events():
            n = 0
            async for r in a.subscribe(GraphQLRequest('subscription { orderEvents(types: ["order.*"]) { id type data } }')):
                say("admin_event", r)
                n += 1
                if n == 2:
                    return

        async def store_events():
            request = GraphQLRequest("subscription($o: ID!) { orderStatus(orderId: $o) { id type orderId } }",
                                     variable_values={"o": ORDER})
            async for r in st.subscribe(request):
                say("store_event", r)
                return

        tasks = [asyncio.create_task(admin_events()), asyncio.create_task(store_events())]
        # The server handles a connection's messages in order: a pong after the subscribe
        # means the subscription has started.
        for t in (admin, store):
            await t.subscribed.wait()
            t.pong_received.clear()
            await t.send_ping()
            await t.pong_received.wait()
        say("ready")
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)


async def main():
    await http_calls()
    await subscriptions()
    say("done")


asyncio.run(main())
