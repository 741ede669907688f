"""A whole merchant flow through a client generated from Keel's /openapi.json.

Run by crates/keel/tests/generated_client.rs with the generated `keel_client` package on
PYTHONPATH: argv is the base URL, the shop's slug and the URL of a webhook receiver; the
environment carries the owner's setup token (KEEL_SETUP_TOKEN) and the path of the document the
client was generated from (KEEL_OPENAPI_DOCUMENT). Every call goes through the generated, typed
functions; every answer must be the documented success, valid against its schema in the
document, parsed into its typed model with no field the document leaves out, and that model
must give back exactly the JSON the server sent. Prints the order's id last, for the test to
follow its webhooks.
"""

import json
import os
import sys
import uuid

import attrs
import jsonschema_rs

from keel_client import AuthenticatedClient, Client
from keel_client.api.api_keys import create_api_key
from keel_client.api.auth import login, setup
from keel_client.api.carts import (
    add_item, apply_promotion, checkout, create_cart, get_cart, set_address,
    set_shipping_option, shopper_order,
)
from keel_client.api.catalog import create_product, get_product, list_products
from keel_client.api.inventory import adjust, create_location, list_levels
from keel_client.api.orders import (
    deliver, fulfil, get_order, list_orders, record_payment, refund, ship,
)
from keel_client.api.pricing import create_promotion, create_shipping_option, create_tax_rate
from keel_client.api.store import store_product
from keel_client.api.webhooks import create_endpoint, get_endpoint, list_messages
from keel_client.models import (
    AddItemRequest, AddressInput, AdjustmentRequest, AdjustmentRequestReason, AmountInput,
    CreateCartRequest, CreateKeyRequest, CurrencyCode, EndpointInput, FulfilRequest,
    LineQuantity, LocationRequest, LoginRequest, ManualPaymentRequest, NoParameters, PriceInput,
    ProductInput, PromotionCodeRequest,
    PromotionInput, RefundBody, SetupRequest, ShippingOptionInput, ShippingOptionRequest,
    ShipRequest, TaxRateInput, VariantInput,
)
from keel_client.types import Response

if sys.flags.optimize:
    sys.exit("the flow's checks are asserts: run it without -O / PYTHONOPTIMIZE")

base_url, slug, hook_url = sys.argv[1:4]
setup_token = os.environ["KEEL_SETUP_TOKEN"]
with open(os.environ["KEEL_OPENAPI_DOCUMENT"], encoding="utf-8") as f:
    COMPONENTS = json.load(f)["components"]
PASSWORD = "plum-harbor-cinder-77-lantern"


def conforms(name: str, sent) -> None:
    """`sent` is valid against the document's schema `name` (OpenAPI 3.1 schemas are JSON
    Schema 2020-12): types, nullability, required fields and enums, which the generated models
    do not check when they parse."""
    assert name in COMPONENTS["schemas"], f"{name} is not a schema of the document"
    root = {"$ref": f"#/components/schemas/{name}", "components": COMPONENTS}
    jsonschema_rs.Draft202012Validator(root).validate(sent)


# Objects the document declares as free-form maps (metadata, an event's data).
FREE_FORM = {"BTreeMap", "ProductResponseMetadata", "EventResponseData", "TimelineEntryData"}


def undeclared(value, path: str) -> list[str]:
    """Fields the server sent that the document does not declare (the generated models keep
    them aside in `additional_properties`), anywhere in `value`."""
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in undeclared(v, f"{path}[{i}]")]
    if not attrs.has(type(value)):
        return []
    found = []
    if type(value).__name__ not in FREE_FORM:
        found += [f"{path}.{k}" for k in getattr(value, "additional_properties", {})]
    for field in attrs.fields(type(value)):
        if field.name != "additional_properties":
            found += undeclared(getattr(value, field.name), f"{path}.{field.name}")
    return found


def ok(response: Response, status: int):
    """The documented success, read into its typed model, which declares every field sent and
    renders the same JSON back."""
    assert response.status_code == status, (response.status_code, response.content)
    model = response.parsed
    assert model is not None and type(model).__name__ != "Problem", model
    name = type(model).__name__
    assert not undeclared(model, name), f"fields the document does not declare: {undeclared(model, name)}"
    sent = json.loads(response.content)
    conforms(name, sent)
    assert model.to_dict() == sent, f"{name} lost or changed fields:\n{model.to_dict()}\n{sent}"
    return model


def key() -> str:
    return str(uuid.uuid4())


# Setup: the owner redeems the setup token, then logs in as anyone would.
anonymous = Client(base_url=base_url, raise_on_unexpected_status=True)
ok(setup.sync_detailed(client=anonymous, body=SetupRequest(setup_token=setup_token, password=PASSWORD)), 200)
owner_email = f"owner@{slug}.test"
tokens = ok(login.sync_detailed(client=anonymous, body=LoginRequest(tenant=slug, email=owner_email, password=PASSWORD)), 200)
staff = AuthenticatedClient(base_url=base_url, token=tokens.access_token, raise_on_unexpected_status=True)
pk = ok(create_api_key.sync_detailed(client=staff, body=CreateKeyRequest(name="storefront", kind="publishable")), 201).secret

# Webhooks: an endpoint for order events.
endpoint = ok(create_endpoint.sync_detailed(client=staff, body=EndpointInput(url=hook_url, event_types=["order.*"])), 201)
ok(get_endpoint.sync_detailed(endpoint.endpoint.id, client=staff), 200)

# Catalog, stock, tax, shipping and a promotion.
product = ok(create_product.sync_detailed(client=staff, body=ProductInput(
    title="Linen shirt", handle="linen-shirt", status="active",
    variants=[VariantInput(sku="SHIRT-M", prices=[PriceInput(amount=4500, currency=CurrencyCode.USD)])],
)), 201)
variant = product.variants[0].id
ok(get_product.sync_detailed(product.id, client=staff), 200)
ok(list_products.sync_detailed(client=staff), 200)
location = ok(create_location.sync_detailed(client=staff, body=LocationRequest(name="Warehouse")), 201)
ok(adjust.sync_detailed(client=staff, body=AdjustmentRequest(
    variant=variant, location=location.id, delta=10, reason=AdjustmentRequestReason.RECEIVED,
)), 201)
ok(list_levels.sync_detailed(client=staff), 200)
ok(create_tax_rate.sync_detailed(client=staff, body=TaxRateInput(country="US", region="NY", rate="8.875")), 201)
shipping = ok(create_shipping_option.sync_detailed(client=staff, body=ShippingOptionInput(
    name="Standard", country="US", amounts=[AmountInput(amount=795, currency=CurrencyCode.USD)],
)), 201)
ok(create_promotion.sync_detailed(client=staff, body=PromotionInput(code="WELCOME10", percent="10")), 201)

# The storefront: a guest's cart and checkout; staff record the offline payment.
shopper = Client(base_url=base_url, raise_on_unexpected_status=True)
ok(store_product.sync_detailed("linen-shirt", client=shopper, keel_publishable_key=pk, currency=CurrencyCode.USD), 200)
new_cart = ok(create_cart.sync_detailed(client=shopper, keel_publishable_key=pk, body=CreateCartRequest(
    currency=CurrencyCode.USD, email="ann@example.com",
)), 201)
cart, secret = new_cart.cart.id, new_cart.cart_secret
as_cart = dict(client=shopper, keel_publishable_key=pk, keel_cart_secret=secret)
ok(add_item.sync_detailed(cart, body=AddItemRequest(variant_id=variant, quantity=2), **as_cart), 200)
ok(set_address.sync_detailed(cart, body=AddressInput(
    name="Ann Buyer", line1="1 Main St", city="New York", region="NY", postal_code="10001", country="US",
), **as_cart), 200)
ok(set_shipping_option.sync_detailed(cart, body=ShippingOptionRequest(shipping_option_id=shipping.id), **as_cart), 200)
priced = ok(apply_promotion.sync_detailed(cart, body=PromotionCodeRequest(code="WELCOME10"), **as_cart), 200)
ok(get_cart.sync_detailed(cart, **as_cart), 200)
# Checkout takes no parameters; the generated client sends `{}` for it.
order = ok(checkout.sync_detailed(cart, body=NoParameters(), idempotency_key=key(), **as_cart), 201)
assert order.status == "pending_payment", order.status
assert order.totals.total.amount == priced.totals.total.amount, "checkout froze the cart's total"
paid = ok(record_payment.sync_detailed(order.id, client=staff, idempotency_key=key(), body=ManualPaymentRequest(
    reference="bank transfer 4711",
)), 201)
assert paid.status == "paid", paid.status
assert paid.payments[0].provider_reference == "bank transfer 4711", paid.payments
ok(shopper_order.sync_detailed(order.id, **as_cart), 200)

# Staff: fulfil, ship, deliver, refund part of it.
line = order.lines[0].id
ok(fulfil.sync_detailed(order.id, client=staff, idempotency_key=key(), body=FulfilRequest(
    lines=[LineQuantity(line_id=line, quantity=2)],
)), 201)
ok(ship.sync_detailed(order.id, client=staff, body=ShipRequest(carrier="UPS", tracking_number="1Z999")), 201)
ok(deliver.sync_detailed(order.id, client=staff), 200)
refunded = ok(refund.sync_detailed(order.id, client=staff, idempotency_key=key(), body=RefundBody(amount=1000, reason="late")), 201)
assert refunded.payment_status == "partially_refunded", refunded.payment_status
assert refunded.refunded.amount == 1000, refunded.refunded
detail = ok(get_order.sync_detailed(order.id, client=staff), 200)
assert [e.type_ for e in detail.timeline][:2] == ["order.placed", "order.paid"], detail.timeline
ok(list_orders.sync_detailed(client=staff), 200)
ok(list_messages.sync_detailed(endpoint.endpoint.id, client=staff), 200)

print(order.id)
