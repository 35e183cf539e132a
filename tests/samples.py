"""One valid JSON body per domain event, as a backend would POST it (router, gateway and API tests)."""

from __future__ import annotations

from typing import Any

TIMESTAMP = "2025-03-01T09:30:00.000Z"
TITLES = {"prop_palm": "Palm Crescent Villas", "prop_marina": "Marina Heights Tower B",
          "prop_oasis": "Desert Oasis Lofts", "prop_creek": "Creek Harbour Residences"}


def accepted(answer: tuple[int, Any]) -> tuple[int, Any]:
    """(status, how many events) of a publish answer; the 202 also names each event's ids, checked elsewhere."""
    status, body = answer
    return status, body.get("accepted") if isinstance(body, dict) else body


def sample(name: str, *, user: str = "usr_amira", prop: str = "prop_palm", org: str = "org_marina",
           ident: str = "9") -> dict[str, Any]:
    """The `data` of domain event `name` for `user` / `prop` / `org`; `ident` makes its own ids unique."""
    title = TITLES.get(prop, "A property")
    investment = {"id": f"inv_{ident}", "propertyId": prop, "propertyTitle": title, "tokens": 2,
                  "amount": 200, "status": "pending"}
    data: dict[str, dict[str, Any]] = {
        "wallet.balance_updated": {
            "userId": user, "walletId": f"wal_{user}",
            "balance": {"usdc": 1250.5, "locked": 0, "totalValue": 11250.5},
            "change": {"amount": 250.5, "type": "deposit", "transactionId": f"tx_{ident}"}},
        "investment.created": {
            "userId": user, "investmentId": f"inv_{ident}", "investment": investment,
            "propertyData": {"totalTokens": 5000, "soldTokens": 2, "availableTokens": 4998,
                             "fundingProgress": 0.04}},
        "investment.confirmed": {
            "userId": user, "investmentId": f"inv_{ident}",
            "investment": {**investment, "status": "confirmed", "transactionHash": "0xfeed"}},
        "transaction.status_changed": {
            "userId": user, "transactionId": f"tx_{ident}",
            "transaction": {"id": f"tx_{ident}", "type": "deposit", "amount": 250.5, "status": "completed",
                            "previousStatus": "pending", "description": "Deposit of 250.5 USDC"}},
        "property.funding_updated": {
            "propertyId": prop,
            "property": {"id": prop, "title": title, "totalTokens": 5000, "soldTokens": 100,
                         "availableTokens": 4900, "fundingProgress": 2}},
        "property.status_changed": {
            "propertyId": prop,
            "property": {"id": prop, "title": title, "status": "construction", "previousStatus": "funding"}},
        "reward.distributed": {
            "userId": user, "rewardId": f"rwd_{ident}",
            "reward": {"id": f"rwd_{ident}", "amount": 12.5, "type": "roi", "investmentId": "inv_0001",
                       "propertyId": prop, "propertyTitle": title, "description": "ROI payout"}},
        "notification.created": {
            "userId": user,
            "notification": {"id": f"ntf_{ident}", "type": "system", "title": "Hello", "body": "KYC approved",
                             "data": {"propertyId": prop}, "read": False, "createdAt": TIMESTAMP}},
        "portfolio.updated": {
            "userId": user,
            "portfolio": {"totalInvested": 10000, "totalValue": 10500, "totalROI": 5, "totalEarnings": 500,
                          "monthlyIncome": 41.666667,
                          "change": {"field": "totalEarnings", "amount": 500, "percentage": 5}}},
        "announcement.published": {"announcement": {"id": f"ann_{ident}", "title": "Maintenance",
                                                     "body": "Tonight 02:00-02:30 UTC"}},
        "organization.updated": {
            "orgId": org, "update": {"id": f"upd_{ident}", "kind": "kyc", "title": "Issuer KYC renewed",
                                     "body": "Valid until 2026", "propertyId": prop}},
    }
    return {**data[name], "timestamp": TIMESTAMP}


def envelope(name: str, **options: Any) -> dict[str, Any]:
    """`{"event": name, "data": sample(name, ...)}`: one item of a publish API request."""
    return {"event": name, "data": sample(name, **options)}
